"""fakecloud: a loopback server that replays recorded cloud API responses to the real SDKs."""

from auditor.fakecloud.aws_handler import AwsQueryHandler
from auditor.fakecloud.azure_handler import AzureHandler
from auditor.fakecloud.faults import FakeCloudConfigError, FaultConfig
from auditor.fakecloud.gcp_handler import GcpHandler
from auditor.fakecloud.replay import aws_accounts
from auditor.fakecloud.securityhub_handler import SecurityHubHandler
from auditor.fakecloud.server import FakeCloud, RequestRecord, register_handler

# Registered here, in routing order, so that the server imports no cloud (and no cloud the
# server); the package import runs before any use of the server module.
register_handler(SecurityHubHandler)  # before EC2: its JSON could contain "Action="
register_handler(AwsQueryHandler)
register_handler(GcpHandler)
register_handler(AzureHandler)

__all__ = [
    "AzureHandler",
    "FakeCloud",
    "FakeCloudConfigError",
    "FaultConfig",
    "GcpHandler",
    "RequestRecord",
    "SecurityHubHandler",
    "aws_accounts",
    "register_handler",
]
