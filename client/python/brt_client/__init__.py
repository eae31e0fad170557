"""Python client for brt-server: score books, stream completions, manage sessions.

See client/README.md. Session save/restore/fork are not available (the server has no persistence
RPCs yet).
"""
from .client import (Alternative, BrtError, Client, GeneratedToken, Generation, ScoreResult, Summary,
                     Token)
from ._proto import brt_pb2 as pb

__all__ = ["Alternative", "BrtError", "Client", "GeneratedToken", "Generation", "ScoreResult", "Summary",
           "Token", "pb"]
__version__ = "0.1.0"
