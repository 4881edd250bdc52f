"""The data plane's engine config: the declarative spec the controller sends to an agent (`spec`), its
construction from the database (`build`), and its rendering into haproxy.cfg (`render`)."""

from quadriga.engine.render import EnginePaths, RenderError, RenderOptions, render
from quadriga.engine.spec import EngineSpec

__all__ = ["EnginePaths", "EngineSpec", "RenderError", "RenderOptions", "render"]
