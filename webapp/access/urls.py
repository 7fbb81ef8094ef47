"""Device access routes under `/api/v1/` (included by `webapp.core.api`)."""

from webapp.access.api import AclRuleViewSet, DeviceKeysViewSet, ProductRegistrationViewSet

ROUTES = [
    ("acl-rules", AclRuleViewSet, "acl-rule"),
    ("product-registrations", ProductRegistrationViewSet, "product-registration"),
    ("device-keys", DeviceKeysViewSet, "device-keys"),
]
