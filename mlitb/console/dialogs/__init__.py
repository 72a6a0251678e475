"""The console's modal dialogs (create a project, hyperparameters, upload, save a model,
confirm), the form field they are built of and the checks of what an operator types."""

from ._confirm import ConfirmDialog
from ._create import CreateProjectDialog
from ._form_field import FormField
from ._hyperparameters import HyperparametersDialog
from ._save import SaveModelDialog
from ._upload import UploadCancelledError, UploadDialog

__all__ = ["ConfirmDialog", "CreateProjectDialog", "FormField", "HyperparametersDialog",
           "SaveModelDialog", "UploadCancelledError", "UploadDialog"]
