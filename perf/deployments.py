"""What the suite loads: the four deployment schemes, and the parts earlier targets name (the embedding
service alone; the orchestrator's /healthz, the load client's headroom). Each is a Route, the HTTP hops
one request takes from the client, over services started from `services()`."""

import base64
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from embedding_service.manifest import TOKENIZER_DIR, EncoderManifest
from embedding_service.tokenizer import Tokenizer
from perf.harness.client import Hop, Route, http_request, one_hop
from stack import services as stack_services
from stack.procs import LOOPBACK, free_port
from stack.services import DEFAULT_HEAD, HEADS, Service

PRECISION = "fp32"
PREDICT_PATH = f"/v1/models/{DEFAULT_HEAD}:predict"
WHOLE_PATH = "/v1/models/whole:predict"


@dataclass(frozen=True)
class System:
    key: str  # "1".."4" for the schemes ("1x": scheme 1 with XLA)
    title: str
    uses: tuple[str, ...]  # the services it runs on, for its memory
    route: Route

    @property
    def is_scheme(self) -> bool:
        return self.key[0].isdigit()


def services(build: Path, configs: Path, *, monolith_xla: bool, heads: Sequence[str] = HEADS) -> dict[str, Service]:
    """Every server the systems need, on free loopback ports, their TF Serving configs written under
    `configs`: the models under `build` (encoder, heads/<name>, whole). The whole model is served by a
    second head service (as TF Serving would serve it), as model `whole`; the orchestrator asks the
    default head, one of `heads`."""
    # The cache off: the load repeats its texts, and the monolith has no cache (the lanes scenario measures
    # it). fp32, as every other scheme and the FLOP bound compute (the backends scenario measures precisions).
    embedding = stack_services.embedding(
        free_port(), build / "encoder", log_level="warning", cache_bytes="0", precision=PRECISION
    )
    head_grpc, head_rest = free_port(), free_port()
    head_config = configs / "heads.config"
    head = stack_services.head(head_grpc, head_rest, build / "heads", head_config, heads=heads)
    stack_services.write_heads(configs / "whole.config", {"whole": build / "whole"})
    whole = dataclasses.replace(
        stack_services.tfserving(free_port(), free_port(), configs / "whole.config"), name="whole"
    )
    orchestrator = stack_services.orchestrator(
        free_port(), embedding.url, head_grpc, head_rest, log_level="warning", head_config_file=str(head_config)
    )
    found = {s.name: s for s in (embedding, head, whole, orchestrator, _monolith(build, "monolith", xla=False))}
    if monolith_xla:
        found["monolith-xla"] = _monolith(build, "monolith-xla", xla=True)
    return found


def _monolith(build: Path, name: str, *, xla: bool) -> Service:
    port = free_port()
    args = (
        "--port",
        str(port),
        "--encoder",
        str(build / "encoder"),
        "--head",
        str(build / "heads" / DEFAULT_HEAD / "1"),
    )
    return Service(name, "perf.monolith", f"http://{LOOPBACK}:{port}", "/readyz", (*args, *(("--xla",) * xla)))


def _port(service: Service) -> int:
    return int(service.url.rsplit(":", 1)[1])


def _post(path: str, payload: object) -> bytes:
    return http_request("POST", path, orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY))


def _head_predict(_: int, embedding_answer: bytes) -> bytes:
    """Scheme 3's client step between the hops: the embedding service's base64 float32 vector as a TF
    Serving REST row."""
    vector = base64.b64decode(orjson.loads(embedding_answer)["data"][0]["embedding"])
    return _post(PREDICT_PATH, {"instances": [np.frombuffer(vector, dtype="<f4")]})


def systems(found: Mapping[str, Service], texts: Sequence[str], encoder_dir: Path) -> list[System]:
    """The schemes in order, then the parts; scheme 2's client tokenises every text once, up front."""
    manifest = EncoderManifest.read(encoder_dir)
    ids = [t.ids.tolist() for t in Tokenizer(encoder_dir / TOKENIZER_DIR, manifest.max_seq_length)(list(texts))]
    classify = [_post("/classify", {"text": t}) for t in texts]
    embed = [_post("/v1/embeddings", {"input": t, "encoding_format": "base64"}) for t in texts]
    whole = [_post(WHOLE_PATH, {"instances": [{"input_ids": i, "attention_mask": [1] * len(i)}]}) for i in ids]
    healthz = http_request("GET", "/healthz")
    port = {name: _port(service) for name, service in found.items()}

    def one(service: str, requests: Sequence[bytes]) -> Route:
        """Request i sends requests[i % len(requests)] to `service`."""
        return one_hop(port[service], lambda index: requests[index % len(requests)])

    found_systems = [
        System("1", "monolith: one process, one model call per request", ("monolith",), one("monolith", classify)),
        System("2", "whole model on the head service, client tokenises", ("whole",), one("whole", whole)),
        System(
            "3",
            "split, client-chained: embedding service, then head",
            ("embedding", "head"),
            (*one("embedding", embed), Hop(port["head"], _head_predict)),
        ),
        System(
            "4",
            "split, orchestrator: POST /classify",
            ("embedding", "head", "orchestrator"),
            one("orchestrator", classify),
        ),
        System("embedding", "embedding service alone", ("embedding",), one("embedding", embed)),
        System("healthz", "orchestrator /healthz (load-client headroom)", (), one("orchestrator", [healthz])),
    ]
    if "monolith-xla" in found:
        xla = System(
            "1x",
            "monolith with XLA (scheme 1 plus the compiler the service uses)",
            ("monolith-xla",),
            one("monolith-xla", classify),
        )
        found_systems.insert(1, xla)
    return found_systems
