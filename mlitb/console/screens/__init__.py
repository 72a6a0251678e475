"""The console's screens: the list of projects, one project, and what both share (the link
bar, the key bindings and the dialogs they open)."""

from ._base import ConsoleScreen
from ._project import ProjectScreen
from ._projects import ProjectsScreen

__all__ = ["ConsoleScreen", "ProjectScreen", "ProjectsScreen"]
