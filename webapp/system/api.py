"""System management API: users, organisation, roles and menus, dictionaries, parameters,
notices and messages, logs, online users, API keys, and the auth endpoints."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import logout as django_logout
from django.contrib.auth.models import Permission, update_last_login
from django.db.models import Prefetch
from django.urls import path
from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, mixins, permissions, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.serializers import (
    TokenObtainPairSerializer,
    TokenRefreshSerializer,
)
from rest_framework_simplejwt.tokens import RefreshToken
from rest_framework_simplejwt.views import TokenObtainPairView, TokenRefreshView

from webapp.core.context import client_address
from webapp.core.errors import DomainError
from webapp.core.permissions import IsAuthenticated
from webapp.system import actions, filtersets, lockout, menus, runs, sessions
from webapp.system import serializers as s
from webapp.system.authentication import SESSION_CLAIM, check_session
from webapp.system.choices import LoginChannel, LoginResult
from webapp.system.models import (
    ApiKey,
    Department,
    DictItem,
    DictType,
    LoginLog,
    LoginSession,
    Menu,
    Message,
    Notice,
    OperationLog,
    Parameter,
    Position,
    Role,
    TaskRun,
    User,
)
from webapp.system.scope import restrict, user_scope
from webapp.system.signals import log_login
from webapp.system.viewsets import (
    ScopedListDestroyViewSet,
    ScopedModelViewSet,
    ScopedReadOnlyModelViewSet,
)


class LoginLocked(DomainError):
    code = "login_locked"
    http_status = status.HTTP_429_TOO_MANY_REQUESTS
    default_detail = _("Too many failed logins: this account is locked from your address for "
                       "a while. Try again later.")


# Auth ----------------------------------------------------------------------------------

class LoginSerializer(TokenObtainPairSerializer):
    """Username and password → a JWT pair bound to a new login session."""

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        request = self.context["request"]
        username = str(attrs.get(self.username_field, ""))
        try:
            super(TokenObtainPairSerializer, self).validate(attrs)
        except exceptions.AuthenticationFailed as exc:
            if lockout.is_locked(username, client_address(request)):
                raise LoginLocked() from exc
            raise
        user: Any = self.user
        session = sessions.open_session(user, LoginChannel.API, request)
        refresh: Any = self.get_token(user)
        refresh[SESSION_CLAIM] = str(session.pk)
        update_last_login(None, user)  # type: ignore[arg-type]
        lockout.reset(username, client_address(request))
        log_login(username, LoginResult.SUCCESS, request, user=user, channel=LoginChannel.API)
        return {"refresh": str(refresh), "access": str(refresh.access_token)}


class LoginView(TokenObtainPairView):
    """Log in: `{"username", "password"}` → `{"access", "refresh"}`."""

    serializer_class = LoginSerializer  # type: ignore[assignment]


class RefreshSerializer(TokenRefreshSerializer):
    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        try:
            token = RefreshToken(attrs["refresh"])  # type: ignore[arg-type]
        except TokenError as exc:
            raise exceptions.AuthenticationFailed(str(exc), code="token_not_valid") from exc
        check_session(token)  # active, and the session of the token's own user
        sid = token.get(SESSION_CLAIM)
        data = super().validate(attrs)
        sessions.extend(sid)
        return data


class RefreshView(TokenRefreshView):
    """A new access token for a refresh token whose session is still active."""

    serializer_class = RefreshSerializer  # type: ignore[assignment]


class LogoutView(APIView):
    """End the current login session (or the one of the given refresh token)."""

    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(request=s.LogoutSerializer, responses={204: None})
    def post(self, request: Request) -> Response:
        body = s.LogoutSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        sid = None
        if body.validated_data.get("refresh"):
            try:
                token = RefreshToken(body.validated_data["refresh"])
            except TokenError as exc:
                raise exceptions.ValidationError({"refresh": [str(exc)]}) from exc
            if str(token.get("user_id")) != str(request.user.pk):
                raise exceptions.PermissionDenied()
            sid = token.get(SESSION_CLAIM)
        elif request.auth is not None and hasattr(request.auth, "get"):
            sid = request.auth.get(SESSION_CLAIM)
        if sid:
            session = LoginSession.objects.filter(pk=sid, user=request.user.pk).first()
            if session is not None:
                sessions.revoke(session)
        if request.auth is None:  # a session (cookie) login
            django_logout(request._request)
        return Response(status=status.HTTP_204_NO_CONTENT)


class MeView(APIView):
    """The caller: profile, roles, permissions, data scope and the menu tree to show."""

    permission_classes = [permissions.IsAuthenticated]

    def _body(self, user: User) -> dict[str, Any]:
        scope = user_scope(user)
        kinds = sorted({r.data_scope for r in user.roles.all() if r.is_active})
        user.permissions = sorted(user.get_all_permissions())  # type: ignore[attr-defined]
        user.menus = menus.menus_for(user)  # type: ignore[attr-defined]
        user.data_scope = "all" if scope.everything else ",".join(kinds)  # type: ignore
        return s.MeSerializer(user, context={"request": self.request}).data

    @extend_schema(responses=s.MeSerializer)
    def get(self, request: Request) -> Response:
        return Response(self._body(request.user))  # type: ignore[arg-type]

    @extend_schema(request=s.ProfileSerializer, responses=s.MeSerializer)
    def patch(self, request: Request) -> Response:
        """Change one's own profile (name, contact, avatar, language, time zone)."""
        me: Any = request.user
        body = s.ProfileSerializer(me, data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        user = actions.update_user(acting_user=me, user=me,
                                   data=dict(body.validated_data))
        return Response(self._body(user))


class PasswordView(APIView):
    """Change one's own password (the current one is required)."""

    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(request=s.ChangePasswordSerializer, responses={204: None})
    def post(self, request: Request) -> Response:
        body = s.ChangePasswordSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        me: Any = request.user
        actions.set_password(user=me,
                             password=body.validated_data["password"],
                             old_password=body.validated_data["old_password"])
        return Response(status=status.HTTP_204_NO_CONTENT)


# Management ----------------------------------------------------------------------------

class SystemViewSet(ScopedModelViewSet):
    """CRUD through `actions.save` / `actions.delete`."""

    def perform_create(self, serializer: Any) -> None:
        serializer.instance = actions.save(
            acting_user=self.request.user, model=serializer.Meta.model, instance=None,
            data=dict(serializer.validated_data))

    def perform_update(self, serializer: Any) -> None:
        serializer.instance = actions.save(
            acting_user=self.request.user, model=serializer.Meta.model,
            instance=serializer.instance, data=dict(serializer.validated_data))

    def perform_destroy(self, instance: Any) -> None:
        actions.delete(instance=instance)


class UserViewSet(SystemViewSet):
    """Users: profile, department, positions, roles, status; password reset; logout."""

    queryset = User.objects.select_related("department").prefetch_related(
        "positions", "roles").order_by("username")
    serializer_class = s.UserSerializer
    filterset_class = filtersets.UserFilterSet
    action_permissions = {"reset_password": ["system.change_user"],
                          "logout": ["system.logout_loginsession"]}

    def perform_create(self, serializer: Any) -> None:
        data = dict(serializer.validated_data)
        password = data.pop("password", None)
        serializer.instance = actions.create_user(acting_user=self.request.user, data=data,
                                                  password=password)

    def perform_update(self, serializer: Any) -> None:
        serializer.instance = actions.update_user(
            acting_user=self.request.user, user=serializer.instance,
            data=dict(serializer.validated_data))

    def perform_destroy(self, instance: User) -> None:
        actions.delete_user(acting_user=self.request.user, user=instance)

    @extend_schema(request=s.ResetPasswordSerializer, responses=s.ResetPasswordResultSerializer)
    @action(detail=True, methods=["post"], url_path="reset-password")
    def reset_password(self, request: Request, pk: str | None = None) -> Response:
        """Set a new password (generated when omitted, shown once); the user must change it
        at the next login and every login of theirs ends."""
        body = s.ResetPasswordSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        password = actions.reset_password(acting_user=request.user, user=self.get_object(),
                                          password=body.validated_data.get("password"))
        return Response({"password": password})

    @extend_schema(request=None, responses=s.CountSerializer)
    @action(detail=True, methods=["post"])
    def logout(self, request: Request, pk: str | None = None) -> Response:
        """End every login of the user."""
        count = actions.logout_user(acting_user=request.user, user=self.get_object())
        return Response({"count": count})


class DepartmentViewSet(SystemViewSet):
    """Departments (a tree with leader and contact)."""

    queryset = Department.objects.order_by("order", "name")
    serializer_class = s.DepartmentSerializer
    filterset_class = filtersets.DepartmentFilterSet

    def perform_create(self, serializer: Any) -> None:
        serializer.instance = actions.save_department(
            acting_user=self.request.user, instance=None, data=dict(serializer.validated_data))

    def perform_update(self, serializer: Any) -> None:
        serializer.instance = actions.save_department(
            acting_user=self.request.user, instance=serializer.instance,
            data=dict(serializer.validated_data))

    def perform_destroy(self, instance: Department) -> None:
        actions.delete_department(department=instance)

    @extend_schema(responses=s.DepartmentTreeSerializer(many=True))
    @action(detail=False, methods=["get"])
    def tree(self, request: Request) -> Response:
        """The departments the caller reaches, as a tree."""
        return Response(menus.department_tree(self.filter_queryset(self.get_queryset())))


class PositionViewSet(SystemViewSet):
    queryset = Position.objects.order_by("order", "code")
    serializer_class = s.PositionSerializer
    filterset_class = filtersets.PositionFilterSet


class RoleViewSet(SystemViewSet):
    """Roles: Django permissions, menus and buttons, data scope."""

    queryset = Role.objects.prefetch_related(
        "departments", "menus",
        Prefetch("permissions", queryset=Permission.objects.select_related(
            "content_type"))).order_by("order", "code")
    serializer_class = s.RoleSerializer
    filterset_class = filtersets.RoleFilterSet

    def perform_create(self, serializer: Any) -> None:
        serializer.instance = actions.save_role(
            acting_user=self.request.user, instance=None, data=dict(serializer.validated_data))

    def perform_update(self, serializer: Any) -> None:
        serializer.instance = actions.save_role(
            acting_user=self.request.user, instance=serializer.instance,
            data=dict(serializer.validated_data))

    def perform_destroy(self, instance: Role) -> None:
        actions.delete_role(acting_user=self.request.user, role=instance)


class MenuViewSet(SystemViewSet):
    """The console's menus, pages and buttons with their permission codes."""

    queryset = Menu.objects.order_by("order", "id")
    serializer_class = s.MenuSerializer
    filterset_class = filtersets.MenuFilterSet

    def perform_create(self, serializer: Any) -> None:
        serializer.instance = actions.save_menu(
            acting_user=self.request.user, instance=None, data=dict(serializer.validated_data))

    def perform_update(self, serializer: Any) -> None:
        serializer.instance = actions.save_menu(
            acting_user=self.request.user, instance=serializer.instance,
            data=dict(serializer.validated_data))

    def perform_destroy(self, instance: Menu) -> None:
        actions.delete_menu(acting_user=self.request.user, menu=instance)

    @extend_schema(responses=s.MenuTreeSerializer(many=True))
    @action(detail=False, methods=["get"])
    def tree(self, request: Request) -> Response:
        """Every menu as a tree (buttons included)."""
        rows = list(self.filter_queryset(self.get_queryset()).values(
            "id", "parent", "name", "menu_type", "permission", "path", "icon"))
        return Response(menus.build_tree(rows))


class DictTypeViewSet(SystemViewSet):
    """Dictionaries (by code); their items are at `/dictionary-items/?dictionary=<code>`."""

    queryset = DictType.objects.order_by("code")
    serializer_class = s.DictTypeSerializer
    filterset_class = filtersets.DictTypeFilterSet
    lookup_field = "code"
    lookup_value_regex = r"[A-Za-z][A-Za-z0-9_.:-]{0,99}"

    @extend_schema(responses=s.DictItemSerializer(many=True))
    @action(detail=True, methods=["get"])
    def items(self, request: Request, code: str | None = None) -> Response:
        """The active items of the dictionary (served from the cache)."""
        from webapp.system.cache import dict_items

        dictionary = self.get_object()
        return Response([{"dictionary": dictionary.code, **item}
                         for item in dict_items(dictionary.code)])


class DictItemViewSet(SystemViewSet):
    queryset = DictItem.objects.select_related("dict_type").order_by(
        "dict_type__code", "order", "value")
    serializer_class = s.DictItemSerializer
    filterset_class = filtersets.DictItemFilterSet


class ParameterViewSet(SystemViewSet):
    """Runtime parameters (by key), cached."""

    queryset = Parameter.objects.order_by("key")
    serializer_class = s.ParameterSerializer
    filterset_class = filtersets.ParameterFilterSet
    lookup_field = "key"
    lookup_value_regex = r"[A-Za-z][A-Za-z0-9_.:-]{0,99}"


class NoticeViewSet(SystemViewSet):
    """Notices; publishing one sends an in-site message to its audience."""

    queryset = Notice.objects.prefetch_related("departments", "roles", "users").order_by(
        "-created")
    serializer_class = s.NoticeSerializer
    filterset_class = filtersets.NoticeFilterSet
    action_permissions = {"publish": ["system.change_notice"],
                          "close": ["system.change_notice"]}

    @extend_schema(request=None, responses=s.PublishResultSerializer)
    @action(detail=True, methods=["post"])
    def publish(self, request: Request, pk: str | None = None) -> Response:
        count = actions.publish_notice(acting_user=request.user, notice=self.get_object())
        return Response({"recipients": count})

    @extend_schema(request=None, responses=s.NoticeSerializer)
    @action(detail=True, methods=["post"])
    def close(self, request: Request, pk: str | None = None) -> Response:
        notice = actions.close_notice(notice=self.get_object())
        return Response(s.NoticeSerializer(notice).data)


class MessageViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin,
                     mixins.DestroyModelMixin, viewsets.GenericViewSet):
    """The caller's own in-site messages."""

    serializer_class = s.MessageSerializer
    filterset_class = filtersets.MessageFilterSet
    permission_classes = [IsAuthenticated]
    queryset = Message.objects.none()

    def get_queryset(self):
        return Message.objects.filter(recipient=self.request.user.pk).order_by("-created", "-id")

    @extend_schema(request=s.MarkReadSerializer, responses=s.CountSerializer)
    @action(detail=False, methods=["post"], url_path="mark-read")
    def mark_read(self, request: Request) -> Response:
        body = s.MarkReadSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        me: Any = request.user
        count = actions.mark_read(user=me,
                                  ids=body.validated_data.get("ids"))
        return Response({"count": count})

    @extend_schema(responses=s.CountSerializer)
    @action(detail=False, methods=["get"], url_path="unread-count")
    def unread_count(self, request: Request) -> Response:
        return Response({"count": self.get_queryset().filter(read__isnull=True).count()})


class OperationLogViewSet(ScopedReadOnlyModelViewSet):
    """Who changed what, with before/after (read-only)."""

    queryset = OperationLog.objects.order_by("-time", "-id")
    serializer_class = s.OperationLogSerializer
    filterset_class = filtersets.OperationLogFilterSet


class LoginLogViewSet(ScopedReadOnlyModelViewSet):
    """Logins and failed logins (read-only); `unlock` lifts a lockout."""

    queryset = LoginLog.objects.order_by("-time", "-id")
    serializer_class = s.LoginLogSerializer
    filterset_class = filtersets.LoginLogFilterSet
    action_permissions = {"unlock": ["system.unlock_login"]}

    @extend_schema(request=s.UnlockSerializer, responses={204: None})
    @action(detail=False, methods=["post"])
    def unlock(self, request: Request) -> Response:
        """Clear the failures of a username from an address (from every address seen in the
        login log when `address` is omitted)."""
        body = s.UnlockSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        username = body.validated_data["username"]
        address = body.validated_data.get("address")
        user = User.objects.filter(username=username).first()
        if user is not None:
            # A lockout lifted at will is a password guessed without end: only for users of
            # the caller's scope who hold no more than the caller (as a password reset).
            if not restrict(User.objects.filter(pk=user.pk), request.user).exists():
                raise exceptions.NotFound()
            actions.check_outranks(request.user, user)
        addresses = [address] if address else set(LoginLog.objects.filter(
            username=username).values_list("address", flat=True))
        for each in addresses:
            lockout.reset(username, each)
        return Response(status=status.HTTP_204_NO_CONTENT)


class OnlineUserViewSet(ScopedListDestroyViewSet):
    """Active logins; DELETE (or POST …/logout/) forces the logout."""

    queryset = LoginSession.objects.select_related("user").order_by("-last_seen")
    serializer_class = s.LoginSessionSerializer
    filterset_class = filtersets.LoginSessionFilterSet
    action_permissions = {"destroy": ["system.logout_loginsession"],
                          "logout": ["system.logout_loginsession"]}

    def get_queryset(self):
        return sessions.online().select_related("user").order_by("-last_seen")

    def perform_destroy(self, instance: LoginSession) -> None:
        actions.force_logout(acting_user=self.request.user, session=instance)

    @extend_schema(request=None, responses={204: None})
    @action(detail=True, methods=["post"])
    def logout(self, request: Request, pk: str | None = None) -> Response:
        actions.force_logout(acting_user=request.user, session=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


class ApiKeyViewSet(mixins.CreateModelMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin,
                    mixins.DestroyModelMixin, viewsets.GenericViewSet):
    """The caller's API keys; the key is shown once, on create. DELETE revokes."""

    serializer_class = s.ApiKeySerializer
    filterset_class = filtersets.ApiKeyFilterSet
    queryset = ApiKey.objects.none()

    def get_queryset(self):
        return ApiKey.objects.filter(user=self.request.user.pk).order_by("-created")

    @extend_schema(responses={201: s.CreatedApiKeySerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        body = self.get_serializer(data=request.data)
        body.is_valid(raise_exception=True)
        me: Any = request.user
        api_key, key = actions.create_api_key(
            acting_user=me, user=me, name=body.validated_data["name"],
            expires=body.validated_data.get("expires"))
        data = s.CreatedApiKeySerializer(api_key).data
        data["key"] = key
        return Response(data, status=status.HTTP_201_CREATED)

    def perform_destroy(self, instance: ApiKey) -> None:
        actions.revoke_api_key(api_key=instance)


class TaskRunViewSet(ScopedReadOnlyModelViewSet):
    """Run history of scheduled tasks."""

    queryset = TaskRun.objects.order_by("-started")
    serializer_class = s.TaskRunSerializer
    filterset_class = filtersets.TaskRunFilterSet

    def get_queryset(self) -> Any:
        """Runs of the schedules the caller sees (`webapp.system.runs`)."""
        return runs.scoped_task_runs(super().get_queryset(), self.request.user)


# (prefix, viewset, basename) for the API router (config/api.py).
ROUTES = [
    ("users", UserViewSet, "user"),
    ("departments", DepartmentViewSet, "department"),
    ("positions", PositionViewSet, "position"),
    ("roles", RoleViewSet, "role"),
    ("menus", MenuViewSet, "menu"),
    ("dictionaries", DictTypeViewSet, "dictionary"),
    ("dictionary-items", DictItemViewSet, "dictionary-item"),
    ("parameters", ParameterViewSet, "parameter"),
    ("notices", NoticeViewSet, "notice"),
    ("messages", MessageViewSet, "message"),
    ("operation-logs", OperationLogViewSet, "operation-log"),
    ("login-logs", LoginLogViewSet, "login-log"),
    ("online-users", OnlineUserViewSet, "online-user"),
    ("api-keys", ApiKeyViewSet, "api-key"),
    ("task-runs", TaskRunViewSet, "task-run"),
]

# The views outside the router, under `/api/v1/` as well.
urlpatterns = [
    path("auth/token/", LoginView.as_view(), name="token_obtain_pair"),
    path("auth/token/refresh/", RefreshView.as_view(), name="token_refresh"),
    path("auth/logout/", LogoutView.as_view(), name="logout"),
    path("auth/me/", MeView.as_view(), name="me"),
    path("auth/password/", PasswordView.as_view(), name="change_password"),
]
