"""The remote backend: an OpenAI-compatible chat server such as vLLM serving the base model + LoRA.

Standard library only (urllib). Images travel inline as base64 PNG data URIs (lossless, so
the server sees the camera frame the in-process backend would). The policy is selected by
its served adapter name; the verifier uses the base model's name, which is how vLLM switches
a LoRA adapter off per request. Constrained stages send the same regular expression as
`structured_outputs: {"regex": ...}` (vLLM >= 0.10.2; its default engine is xgrammar).
vLLM caches shared prompt prefixes itself (automatic prefix caching), so plan and chunk
requests share their image prefill there too.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import socket
import time
import urllib.error
import urllib.request
from typing import Any

import numpy as np

from .config import OpenAIConfig
from .types import Generation, GenerationRequest, PolicyError

MAX_RESPONSE_BYTES = 1 << 20
"""The most of a server's answer read (a chat completion here is a few kilobytes): a broken or
hostile server cannot fill the policy's memory."""


def image_data_uri(image: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def openai_messages(messages: list[dict[str, Any]], images: list[np.ndarray]) -> list[dict[str, Any]]:
    """Chat messages with each {"type": "image"} item replaced by the next image as a data URI."""
    pending = iter(images)
    converted = []
    for message in messages:
        content = message["content"]
        if isinstance(content, list):
            items = []
            for item in content:
                if item.get("type") == "image":
                    items.append({"type": "image_url", "image_url": {"url": image_data_uri(next(pending))}})
                else:
                    items.append(item)
            content = items
        converted.append({"role": message["role"], "content": content})
    return converted


class OpenAIBackend:
    def __init__(self, config: OpenAIConfig) -> None:
        self.config = config
        self.url = config.base_url.rstrip("/") + "/chat/completions"

    def payload(self, request: GenerationRequest) -> dict[str, Any]:
        sampling = request.sampling
        model = self.config.model if request.use_adapter else self.config.base_model
        if not model:
            raise PolicyError("openai.base_model (the served base model name) is needed for the verifier", "verify")
        body: dict[str, Any] = {
            "model": model,
            "messages": openai_messages(request.messages, list(request.images)),
            "max_tokens": request.max_new_tokens,
            "temperature": float(sampling.temperature),
            "top_p": float(sampling.top_p) if sampling.temperature > 0 else 1.0,
        }
        if request.seed is not None:
            body["seed"] = request.seed
        if request.regex is not None:
            if self.config.legacy_guided_regex:
                body["guided_regex"] = request.regex
            else:
                body["structured_outputs"] = {"regex": request.regex}
        return body

    def generate(self, request: GenerationRequest) -> Generation:
        start = time.perf_counter()
        data = json.dumps(self.payload(request)).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self.config.api_key:
            headers["Authorization"] = f"Bearer {self.config.api_key}"
        http_request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
        where = f"the inference server at {self.url}"
        try:
            with urllib.request.urlopen(http_request, timeout=self.config.timeout_s) as response:
                raw = response.read(MAX_RESPONSE_BYTES + 1)
            if len(raw) > MAX_RESPONSE_BYTES:
                raise PolicyError(f"{where} answered more than {MAX_RESPONSE_BYTES} bytes (a completion here is a few kilobytes)")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")[:200]
            raise PolicyError(f"{where} answered HTTP {exc.code}: {detail}") from None
        except TimeoutError:
            raise PolicyError(f"{where} did not answer within {self.config.timeout_s} s") from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, (socket.timeout, TimeoutError)):
                raise PolicyError(f"{where} did not answer within {self.config.timeout_s} s") from None
            raise PolicyError(f"cannot reach {where}: {exc.reason}") from None
        except (OSError, http.client.HTTPException) as exc:  # (a server that speaks no HTTP, a bad port in the URL)
            raise PolicyError(f"connection to {where} failed: {type(exc).__name__}: {exc}") from None
        try:
            answer = json.loads(raw)
            text = answer["choices"][0]["message"]["content"]
            if not isinstance(text, str):
                raise TypeError("content is not a string")
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise PolicyError(f"{where} sent a malformed chat completion ({exc}): {raw[:200]!r}") from None
        usage = answer.get("usage") or {}
        return Generation(
            text=text,
            new_tokens=int(usage.get("completion_tokens", 0)),
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            reused_tokens=int((usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)),
            seconds=time.perf_counter() - start,
            cut_off=answer["choices"][0].get("finish_reason") == "length",
        )

    def close(self) -> None:
        """Nothing to release: every request opens its own connection."""
