"""Styles from a Triton Inference Server's model repository (`--triton-url`): every READY model whose
metadata is a style's (see triton_backend.style_signature) becomes a style named after it, listed by
`stylestream plugins` and on the page like a local one, and run on that server.

Discovery asks the server once, at start: an unreachable server is TritonUnreachable naming the URL
(the user asked for it, so it is the command's error, not a skipped plugin). A model that is not ready
(it failed to load) is reported in PluginSet.errors like a broken model file; a model that is not a style
(a server may serve anything) is left out, said at -v. A local style of the same name is the same
style: it keeps its files, card and thumbnail, and runs on Triton under --backend triton."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stylestream.plugins.neural import NeuralPlugin
from stylestream.runtime.base import Backend
from stylestream.runtime.triton_backend import (
    NotAStyle,
    TritonBackend,
    TritonConnection,
    TritonError,
    style_signature,
)

if TYPE_CHECKING:
    from stylestream.plugins.discovery import PluginSet

log = logging.getLogger(__name__)


class TritonStyle(NeuralPlugin):
    """A style whose model exists only on a Triton server: it runs there whatever --backend says (no
    local file could run it)."""

    def __init__(self, name: str, url: str, model: str, title: str = "", description: str = "") -> None:
        super().__init__(name, {"triton": Path(model)}, title,
                         description or f"neural style on Triton ({url}, model {model})")  # fmt: skip
        self.url = url
        self.model = model

    @property
    def backend(self) -> str:  # type: ignore[override]
        return TritonBackend.name

    def bind(self, backend: str = "auto", device: str = "auto",
             backend_options: Mapping[str, Mapping[str, Any]] | None = None) -> TritonStyle:  # fmt: skip
        return TritonStyle(self.name, self.url, self.model, self.title, self.description)

    def runner(self) -> Backend:
        """The backend, made once. It contacts the server only when frames come (check on first use), so
        a server that is down now does not break this style for good."""
        if self._runner is None:
            with self._lock:
                if self._runner is None:
                    self._runner = TritonBackend(Path(self.model), "triton", url=self.url, model=self.model)
        return self._runner


def add_triton_styles(plugins: PluginSet, url: str) -> None:
    """Add the style models of the server at `url` to `plugins` (after every local source, which keeps
    its names). TritonUnreachable when the server does not answer; ValueError for a malformed URL."""
    from stylestream.plugins.discovery import slugify  # discovery imports this module

    conn = TritonConnection(url)
    try:
        where = str(conn.url)
        for entry in conn.index():
            model = str(entry.get("name", ""))
            source = f"{where}/v2/models/{model}"
            if str(entry.get("state", "")).upper() != "READY":
                plugins._error(source, f"not ready on Triton ({entry.get('state') or 'not loaded'}: "
                                       f"{entry.get('reason') or 'no reason given'})")  # fmt: skip
                continue
            name = slugify(model)
            if name in plugins and isinstance(plugins.get(name), NeuralPlugin):
                log.info("style %r: local files and Triton model %r are one style; --backend triton runs it on "
                         "Triton, other backends locally", name, model)  # fmt: skip
                continue
            try:
                style_signature(conn.metadata(model), conn.config(model))
            except NotAStyle as exc:
                log.info("Triton model %r at %s is not a style (%s); left out", model, where, exc)
                continue
            except TritonError as exc:  # unloaded since the index was read, say
                plugins._error(source, str(exc))
                continue
            plugins.add(TritonStyle(name, where, model), source)
    finally:
        conn.close()
