from django.db import migrations


def forwards(apps, schema_editor):
    from webapp.system.defaults import create_defaults

    create_defaults(apps, schema_editor)


class Migration(migrations.Migration):

    dependencies = [
        ("system", "0002_organisation_rbac_logs"),
    ]

    operations = [
        migrations.RunPython(forwards, migrations.RunPython.noop),
    ]
