"""fakecloud: a loopback server that replays recorded cloud API responses to the real SDKs."""

from auditor.fakecloud.faults import FakeCloudConfigError, FaultConfig
from auditor.fakecloud.replay import aws_accounts
from auditor.fakecloud.server import FakeCloud, RequestRecord, register_handler

__all__ = [
    "FakeCloud",
    "FakeCloudConfigError",
    "FaultConfig",
    "RequestRecord",
    "aws_accounts",
    "register_handler",
]
