from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from .base import ClinicScopedAPIMixin
from .permissions import RoutePermission


class SchemaView(ClinicScopedAPIMixin, SpectacularAPIView):
    """OpenAPI 3 document of the whole API (public: it holds no clinic data)."""

    permission_classes = [RoutePermission]


class ApiDocsView(ClinicScopedAPIMixin, SpectacularSwaggerView):
    """Browsable API documentation for logged-in members."""

    permission_classes = [RoutePermission]
