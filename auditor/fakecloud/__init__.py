"""fakecloud: a loopback server that replays recorded cloud API responses to the real SDKs."""

from auditor.fakecloud.azure_handler import AzureHandler
from auditor.fakecloud.faults import FakeCloudConfigError, FaultConfig
from auditor.fakecloud.gcp_handler import GcpHandler
from auditor.fakecloud.replay import aws_accounts
from auditor.fakecloud.server import FakeCloud, RequestRecord, register_handler

# Registered (not built in) so that server.py's built-in list stays AWS-only; the package
# import runs before any use of the server module, so every FakeCloud serves GCP and Azure too.
register_handler(GcpHandler)
register_handler(AzureHandler)

__all__ = [
    "AzureHandler",
    "FakeCloud",
    "FakeCloudConfigError",
    "FaultConfig",
    "GcpHandler",
    "RequestRecord",
    "aws_accounts",
    "register_handler",
]
