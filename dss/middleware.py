"""Every page asks for a login; the REST API answers for itself (401/403, never a redirect)."""

from django.contrib.auth.middleware import LoginRequiredMiddleware as BaseLoginRequired

# The API's documentation pages are pages: they send an anonymous visitor to the login page.
API_PAGES = ("/api/docs/", "/api/redoc/")


class LoginRequiredMiddleware(BaseLoginRequired):
    def process_view(self, request, view_func, view_args, view_kwargs):
        path = request.path_info
        if path.startswith("/api/") and not path.startswith(API_PAGES):
            return None
        return super().process_view(request, view_func, view_args, view_kwargs)
