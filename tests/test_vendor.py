"""The vendored htmx is the pinned npm release, unmodified, and the templates use htmx 4 syntax."""

import hashlib
import json
import subprocess
import sys

from conftest import ROOT
from html_tree import parse
from webapp import HTMX_VERSION

VENDOR = ROOT / "static" / "vendor"


def test_vendored_files_match_their_checksums():
    lines = (VENDOR / "SHA256SUMS").read_text().splitlines()
    assert lines
    for line in lines:
        digest, name = line.split()
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == digest, name


def test_vendored_version_is_the_pinned_one_and_the_one_served(client):
    pinned = json.loads((ROOT / "scripts/vendor/package.json").read_text())["dependencies"]["htmx.org"]
    assert pinned == HTMX_VERSION
    assert (VENDOR / f"htmx-{HTMX_VERSION}.min.js").is_file()
    assert f'this.version="{HTMX_VERSION}"' in (VENDOR / f"htmx-{HTMX_VERSION}.min.js").read_text()
    home = parse(client.get("/").get_data(as_text=True))
    scripts = [script.get("src") for script in home.find_all("script")]
    assert f"/static/vendor/htmx-{HTMX_VERSION}.min.js" in scripts
    with client.get(f"/static/vendor/htmx-{HTMX_VERSION}.min.js") as served:
        assert served.status_code == 200


def test_templates_pass_the_htmx_upgrade_checker(tmp_path):
    # The checker knows htmx attributes by their hx- names; the templates write them data-hx-.
    templates = ROOT / "templates"
    for template in templates.rglob("*.html"):
        copy = tmp_path / template.relative_to(templates)
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_text(template.read_text().replace("data-hx-", "hx-"))
    assert "hx-post=" in (tmp_path / "chat" / "_form.html").read_text()
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts/vendor/htmx-upgrade-check.py"), "--no-color",
         str(tmp_path)],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
