"""Python client for brt-server: score books, stream completions, manage sessions.

See client/README.md.
"""
from .client import (Alternative, BrtError, Client, GeneratedToken, Generation, SavedSnapshot, ScoreResult,
                     Summary, Token)
from ._proto import brt_pb2 as pb

__all__ = ["Alternative", "BrtError", "Client", "GeneratedToken", "Generation", "SavedSnapshot", "ScoreResult",
           "Summary", "Token", "pb"]
__version__ = "0.1.0"
