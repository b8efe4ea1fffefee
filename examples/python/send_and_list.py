#!/usr/bin/env python3
"""Call a casebridge node's agency API from Python, using only proto/.

Sends examples/records/wanted_alert.json as one agency (Agency.Send), waits
until the record is in each recipient agency's inbox (Agency.ListInbox, with
each recipient's own certificate), then shows the sender's delivery status
with the signed receipts (Agency.Status).

Send goes under an idempotency key (--idempotency-key, or a fresh one): a
call that gets no answer (the node unreachable, the connection broken, the
deadline passed) is made again with the same key, and the node makes one
record of them all. Run the script again with the printed key to see the
first call's envelope come back instead of a second one.

Needs Python 3.11+ (tomllib), `pip install grpcio grpcio-tools`, and stubs
generated into examples/python/gen/ (see examples/python/README.md).

    python examples/python/send_and_list.py --fed fed --sender HR/police \
        --to RS/police,BA/police
"""

import argparse
import os
import sys
import time
import tomllib
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, os.environ.get("CASEBRIDGE_STUBS", str(HERE / "gen")))

import grpc  # noqa: E402
from google.protobuf import json_format  # noqa: E402

from casebridge.v1 import agency_pb2, agency_pb2_grpc  # noqa: E402
from casebridge.v1 import labels_pb2, record_pb2  # noqa: E402


def connect(fed: Path, agency: str):
    """An Agency stub for `agency` ("CC/name"), from its profile.toml.

    The profile names the node's address and, relative to itself, the
    agency's certificate chain (leaf, then national CA), its PKCS#8 private
    key and the federation root CA that issued the node's certificate.
    """
    profile_path = fed / "agencies" / agency / "profile.toml"
    profile = tomllib.loads(profile_path.read_text())
    base = profile_path.parent

    def read(key: str) -> bytes:
        return (base / profile["tls"][key]).read_bytes()

    creds = grpc.ssl_channel_credentials(
        root_certificates=read("root"),
        private_key=read("key"),
        certificate_chain=read("cert"),
    )
    # profile["node"] is "127.0.0.1:PORT"; the node certificate from
    # `pki init` has the SANs localhost and 127.0.0.1, so either host works.
    channel = grpc.secure_channel(profile["node"], creds)
    return agency_pb2_grpc.AgencyStub(channel)


# Failures after which the call may not have reached the node, or its answer
# was lost: safe to repeat under the same idempotency key.
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


def send_once(stub, request, attempts: int = 5):
    """Agency.Send, repeated with the same request (and so the same key) on
    a failure in RETRYABLE, at most `attempts` times, waiting 0.25 s, 0.5 s,
    1 s, ... between them."""
    for attempt in range(1, attempts + 1):
        try:
            return stub.Send(request, timeout=30)
        except grpc.RpcError as e:
            if e.code() not in RETRYABLE or attempt == attempts:
                raise
            print(f"  no answer ({e.code().name}); calling again with key {request.idempotency_key}", file=sys.stderr)
            time.sleep(0.25 * 2 ** (attempt - 1))


def enum_name(enum, value: int, prefix: str) -> str:
    return enum.Name(value).removeprefix(prefix).lower()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fed", type=Path, required=True, help="directory written by `casebridge pki init`")
    ap.add_argument("--sender", default="HR/police", help="sending agency, CC/name")
    ap.add_argument("--to", default="RS/police,BA/police", help="recipients, CC/name[,CC/name...]")
    ap.add_argument("--record", type=Path, default=REPO / "examples/records/wanted_alert.json")
    ap.add_argument(
        "--idempotency-key",
        help="1 to 128 printable ASCII characters; a fresh UUID if not given",
    )
    args = ap.parse_args()
    key = args.idempotency_key or str(uuid.uuid4())
    recipients = [r.strip() for r in args.to.split(",") if r.strip()]

    # The record in canonical proto3 JSON, as the CLI reads it.
    record = json_format.Parse(args.record.read_text(), record_pb2.CaseRecord())
    # The labels travel in the signed header; the node derives the data
    # categories from the record itself.
    labels = labels_pb2.Labels(
        purpose=labels_pb2.PURPOSE_IMMEDIATE_THREAT,
        legal_basis=labels_pb2.LEGAL_BASIS_SPECIFIC_SITUATION_DEROGATION,
        legal_basis_reference="LED Art. 38(1)(c): immediate and serious threat to public security",
        handling=labels_pb2.HANDLING_CODE_H0,
        evaluation=labels_pb2.Evaluation(
            source=labels_pb2.SOURCE_RELIABILITY_B,
            accuracy=labels_pb2.INFORMATION_ACCURACY_2,
        ),
        classification=labels_pb2.CLASSIFICATION_RESTRICTED,
        priority=labels_pb2.PRIORITY_IMMEDIATE,
        case_reference="PY-ALERT-0001",
    )

    sender = connect(args.fed, args.sender)
    resp = send_once(
        sender,
        agency_pb2.SendRequest(recipients=recipients, record=record, labels=labels, idempotency_key=key),
    )
    cats = ", ".join(enum_name(labels_pb2.DataCategory, c, "DATA_CATEGORY_") for c in resp.categories) or "none"
    print(f"Send as {args.sender} to {', '.join(recipients)}")
    print(f"  key        {key}")
    print(f"  envelope   {resp.envelope_id}{' (made earlier under this key)' if resp.repeat else ''}")
    print(f"  state      {enum_name(agency_pb2.SendState, resp.state, 'SEND_STATE_')}: {resp.detail}")
    print(f"  log index  {resp.log_index}")
    print(f"  categories {cats}")
    if resp.state != agency_pb2.SEND_STATE_ACCEPTED:
        return 1

    for rcpt in recipients:
        inbox = connect(args.fed, rcpt)
        deadline = time.monotonic() + 10
        while True:
            entries = inbox.ListInbox(agency_pb2.ListInboxRequest(), timeout=10).entries
            entry = next((e for e in entries if e.envelope_id == resp.envelope_id), None)
            if entry or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        print(f"ListInbox as {rcpt}: {len(entries)} entries")
        if entry is None:
            print(f"  {resp.envelope_id} not delivered yet")
            continue
        print(
            f"  {entry.envelope_id}  from {entry.sender_agency}  "
            f"{enum_name(labels_pb2.RecordKind, entry.kind, 'RECORD_KIND_')}  "
            f"priority {enum_name(labels_pb2.Priority, entry.labels.priority, 'PRIORITY_')}  "
            f"case {entry.labels.case_reference}"
        )

    # Receipts travel back through the broker; wait until none is pending.
    deadline = time.monotonic() + 10
    while True:
        status = sender.Status(agency_pb2.StatusRequest(envelope_id=resp.envelope_id), timeout=10)
        pending = [r for r in status.recipient_status if r.state == agency_pb2.DELIVERY_STATE_PENDING]
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    print(f"Status as {args.sender}:")
    for r in status.recipient_status:
        state = enum_name(agency_pb2.DeliveryState, r.state, "DELIVERY_STATE_")
        signed = f", receipt signed by node {r.receipt.recipient_node}" if r.HasField("receipt") else ""
        print(f"  {r.node} ({', '.join(r.agencies)}): {state}{signed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
