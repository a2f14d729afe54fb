"""What every service needs the same way: settings base, errors, logging, middleware, ops routes, serving."""
