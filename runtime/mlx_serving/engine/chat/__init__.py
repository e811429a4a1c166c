"""Chat requests: messages and tools rendered with the model's template, a forced tool call
as a grammar, and the output split into text, reasoning and tool calls."""

from __future__ import annotations

from .plan import ChatPlan, plan_chat
from .response import ChatOutput, ResponseCall, ResponseSplitter, ResponseText

# Advertised in runtime/info capabilities: `tools` / `tool_choice` and `reasoning`.
CAPABILITIES = ("reasoning", "tools")

__all__ = [
    "CAPABILITIES",
    "ChatOutput",
    "ChatPlan",
    "ResponseCall",
    "ResponseSplitter",
    "ResponseText",
    "plan_chat",
]
