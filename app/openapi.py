"""The parts of the OpenAPI document that FastAPI cannot derive from the routes alone.

- Security as this server applies it: with auth on, every /v1 operation needs the bearer key
  and answers 401 with `WWW-Authenticate` without one; with auth off there is no scheme, no
  requirement and no 401 in the document, because the server asks for none.
- Constraints the server enforces that the form declarations do not state (a file part that is
  not empty).
- OpenAPI links from each create to the operations that read or use what it made, so a client
  (or a stateful tester) can chain "upload a dataset -> read it -> train on it".
"""

from __future__ import annotations

from typing import Any

BEARER_SCHEME = "HTTPBearer"

_NEW_ID = "$response.body#/id"

# (operationId of the create, its success status) -> links: name -> (target operationId,
# parameters, request body). The create's response body always carries the new `id`.
LINKS: dict[tuple[str, str], dict[str, tuple[str, dict[str, str], Any]]] = {}

_DATASET_LINKS: dict[str, tuple[str, dict[str, str], Any]] = {
    "GetDataset": ("get_dataset", {"dataset_id": _NEW_ID}, None),
    "DeleteDataset": ("delete_dataset", {"dataset_id": _NEW_ID}, None),
    "FinetuneOnDataset": (
        "create_job",
        {},
        {"kind": "finetune", "train_dataset": _NEW_ID},
    ),
}
_MODEL_LINKS: dict[str, tuple[str, dict[str, str], Any]] = {
    name: (target, {"model_id": _NEW_ID}, None)
    for name, target in (
        ("GetModel", "get_model"),
        ("DownloadModel", "download_model"),
        ("DeleteModel", "delete_model"),
        ("ModelReady", "model_ready"),
        ("ListModelVariants", "list_model_variants"),
        ("CreateModelVariant", "create_model_variant"),
        ("Predict", "predict"),
        ("PredictProba", "predict_proba"),
        ("Evaluate", "evaluate"),
    )
}
_JOB_LINKS: dict[str, tuple[str, dict[str, str], Any]] = {
    name: (target, {"job_id": _NEW_ID}, None)
    for name, target in (
        ("GetJob", "get_job"),
        ("CancelJob", "cancel_job"),
        ("ListJobEvents", "list_job_events"),
        ("ListJobMetrics", "list_job_metrics"),
        ("GetJobReport", "get_job_report"),
    )
}
LINKS[("create_dataset", "201")] = _DATASET_LINKS
LINKS[("register_dataset_path", "201")] = _DATASET_LINKS
LINKS[("create_model", "201")] = _MODEL_LINKS
LINKS[("create_job", "202")] = _JOB_LINKS

EXAMPLE_TABLE = "text,label\n" + "".join(
    f"{text},{label}\n"
    for text, label in [
        ("a fine film", "pos"),
        ("dull and slow", "neg"),
        ("loved every minute", "pos"),
        ("a waste of time", "neg"),
    ]
    * 2
)

WWW_AUTHENTICATE = {
    "description": '`Bearer` (no key sent) or `Bearer error="invalid_token"` (unknown or '
    "revoked key)",
    "schema": {"type": "string"},
}


def _operations(document: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (path, operation)
        for path, methods in document.get("paths", {}).items()
        for operation in methods.values()
    ]


def document_contract(document: dict[str, Any], *, auth_enabled: bool) -> dict[str, Any]:
    components = document.setdefault("components", {})
    for _, operation in _operations(document):
        responses = operation.setdefault("responses", {})
        if not auth_enabled:
            operation.pop("security", None)
            responses.pop("401", None)
        elif operation.get("security"):
            responses["401"]["headers"] = {"WWW-Authenticate": WWW_AUTHENTICATE}
    if not auth_enabled:
        components.pop("securitySchemes", None)
        document["info"]["description"] += (
            " This server runs with auth off: no API key is needed or checked."
        )
    else:
        document["info"]["description"] += (
            " Every /v1 operation needs an API key: `Authorization: Bearer dk_...`."
        )
    _multipart_forms(components.get("schemas", {}))
    # A table the upload takes as it is, so tools (and readers) have one upload that works.
    upload = document["paths"]["/v1/datasets"]["post"]["requestBody"]["content"]
    upload["multipart/form-data"]["example"] = {"file": EXAMPLE_TABLE, "name": "reviews"}
    _add_links(document)
    return document


def _multipart_forms(schemas: dict[str, Any]) -> None:
    """Form parts as a form sends them: a string, or absent. A multipart body has no null (a
    part 'null' is the four letters), so an optional part is one that may be left out."""
    for name, schema in schemas.items():
        if not name.startswith("Body_"):
            continue
        for key, prop in list(schema.get("properties", {}).items()):
            branches = prop.get("anyOf")
            if branches and {"type": "null"} in branches and len(branches) == 2:
                (string,) = [b for b in branches if b != {"type": "null"}]
                rest = {k: v for k, v in prop.items() if k not in ("anyOf", "default")}
                schema["properties"][key] = {**string, **rest}
            # An empty upload is never a table or a checkpoint: the server refuses it (422).
            prop = schema["properties"][key]
            if prop.get("format") == "binary" or (
                prop.get("contentMediaType") == "application/octet-stream"
            ):
                prop["minLength"] = 1


def _add_links(document: dict[str, Any]) -> None:
    by_id = {operation["operationId"]: operation for _, operation in _operations(document)}
    for (source, status), links in LINKS.items():
        response = by_id[source]["responses"][status]
        response["links"] = {}
        for name, (target, parameters, body) in links.items():
            assert target in by_id, target
            link: dict[str, Any] = {"operationId": target}
            if parameters:
                link["parameters"] = parameters
            if body is not None:
                link["requestBody"] = body
            link["description"] = f"The new resource's id, for {target}"
            response["links"][name] = link
