"""API keys: the hashed key file, the checks of a call's metadata, and `faceanalysis keys`."""

from __future__ import annotations

import re

import grpc
import pytest

from faceanalysis.cli.main import main as cli
from faceanalysis.runtime import auth, config

ANALYZE = "/faceanalysis.v1.FaceAnalysis/AnalyzeImage"
DELETE = "/faceanalysis.v1.FaceAnalysis/DeleteAnalysis"
KEY_A, KEY_B = "fa_" + "a" * 40, "fa_" + "b" * 40


def bearer(key: str) -> tuple:
    return (("authorization", f"Bearer {key}"),)


def ring_of(text: str) -> auth.KeyRing:
    return auth.KeyRing(auth.parse(text, "keys.txt"))


def test_parses_lines_comments_and_default_scopes():
    keys = auth.parse(f"""
# tenant a, every scope
{auth.hash_key(KEY_A).upper()} acme   # uppercase hex is accepted
   {auth.hash_key(KEY_B)}  team-2 read,analyze
""", "keys.txt")
    assert [(k.digest, k.tenant, set(k.scopes)) for k in keys] == [
        (auth.hash_key(KEY_A), "acme", {"analyze", "read", "delete"}),
        (auth.hash_key(KEY_B), "team-2", {"analyze", "read"}),
    ]


@pytest.mark.parametrize("line, problem", [
    ("0" * 64, "expected `<sha256 hex of the key> <tenant> [<scopes>]`, found 1 fields"),
    ("0" * 64 + " acme read extra", "found 4 fields"),
    ("0" * 63 + " acme", "the first field must be the key's sha256 as 64 hex characters"),
    ("z" * 64 + " acme", "the first field must be the key's sha256"),
    (KEY_A + " acme", "looks like a plain API key: store its sha256"),
    ("0" * 64 + " Acme", "the tenant (second field) must be 1-63 characters"),
    ("0" * 64 + " -acme", "the tenant (second field)"),
    ("0" * 64 + " " + "a" * 64, "the tenant (second field)"),
    ("0" * 64 + " acme read,write", "the third field: scopes must be a comma-separated subset of analyze,read,delete"),
    ("0" * 64 + " acme read,", "the third field"),
])
def test_malformed_line_names_file_line_and_problem(line, problem):
    with pytest.raises(auth.KeyFileError) as err:
        auth.parse(f"# keys\n\n{line}\n", "/etc/fa/keys.txt")
    assert "/etc/fa/keys.txt:3: " in str(err.value) and problem in str(err.value)


def test_errors_never_quote_the_line():
    """A plain key pasted into any field must not reach the log through the error."""
    with pytest.raises(auth.KeyFileError) as err:
        auth.parse(f"{KEY_A} acme\n{'0' * 64} {KEY_B}\n{'1' * 64} acme {KEY_B}\n", "keys.txt")
    message = str(err.value)
    assert KEY_A not in message and KEY_B not in message and "aaaa" not in message and "bbbb" not in message
    assert [line for line in message.splitlines() if "keys.txt:" in line] == [
        f"  keys.txt:{n}: {what}" for n, what in (
            (1, "the first field looks like a plain API key: store its sha256 (`faceanalysis keys hash`), "
                "never the key itself"),
            (2, "the tenant (second field) must be 1-63 characters of a-z, 0-9 and '-', not starting with '-'"),
            (3, "the third field: scopes must be a comma-separated subset of analyze,read,delete"))]


def test_the_same_key_twice_is_refused():
    digest = auth.hash_key(KEY_A)
    with pytest.raises(auth.KeyFileError, match=r"keys.txt:2: the same key hash is already on line 1"):
        auth.parse(f"{digest} a\n{digest.upper()} b\n", "keys.txt")


def test_a_file_without_keys_is_refused():
    with pytest.raises(auth.KeyFileError, match="keys.txt holds no keys.*unset FACEANALYSIS_API_KEYS_FILE"):
        auth.parse("# nothing yet\n\n", "keys.txt")


@pytest.mark.parametrize("make", [lambda p: p / "absent.txt", lambda p: p])
def test_an_unreadable_file_stops_the_service(tmp_path, make):
    path = make(tmp_path)
    with pytest.raises(SystemExit) as err:
        auth.interceptors(path)
    message = str(err.value)
    assert message.startswith(f"API keys: cannot read the API key file {path} (FACEANALYSIS_API_KEYS_FILE): ")
    assert "No such file" in message or "Is a directory" in message


def test_no_file_means_auth_off(monkeypatch):
    assert auth.interceptors(None) == ()
    monkeypatch.setenv("FACEANALYSIS_API_KEYS_FILE", "")
    assert config.load().api_keys_file is None


def test_keys_are_found_by_hash_and_nothing_else():
    ring = ring_of(f"{auth.hash_key(KEY_A)} acme\n")
    assert ring.find(KEY_A).tenant == "acme"
    assert ring.find(KEY_B) is None
    assert ring.find(auth.hash_key(KEY_A)) is None  # the stored hash is not a key


@pytest.mark.parametrize("metadata, message", [
    ((), auth.MISSING),
    ((("x-request-id", "1"),), auth.MISSING),
    ((("authorization", KEY_A),), auth.MALFORMED),
    ((("authorization", "Basic " + KEY_A),), auth.MALFORMED),
    ((("authorization", "Bearer "),), auth.MALFORMED),
    (bearer(KEY_A) + bearer(KEY_A), auth.MALFORMED),
    (bearer(KEY_B), auth.UNKNOWN),
])
def test_calls_without_a_valid_key_are_unauthenticated(metadata, message):
    ring = ring_of(f"{auth.hash_key(KEY_A)} acme\n")
    with pytest.raises(auth.Refused) as refused:
        auth.authorize(ring, ANALYZE, metadata)
    assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED and refused.value.message == message
    assert KEY_A not in message and KEY_B not in message


def test_scheme_is_case_insensitive():
    ring = ring_of(f"{auth.hash_key(KEY_A)} acme\n")
    assert auth.authorize(ring, ANALYZE, (("authorization", f"bearer  {KEY_A} "),)).tenant == "acme"


def test_a_key_without_the_scope_is_denied():
    ring = ring_of(f"{auth.hash_key(KEY_A)} acme analyze,read\n")
    assert auth.authorize(ring, ANALYZE, bearer(KEY_A)).tenant == "acme"
    with pytest.raises(auth.Refused) as refused:
        auth.authorize(ring, DELETE, bearer(KEY_A))
    assert refused.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert refused.value.message == ("DeleteAnalysis needs an API key with the `delete` scope; "
                                     "this key has: analyze,read")
    with pytest.raises(auth.Refused) as refused:  # fail closed: a method nobody mapped
        auth.authorize(ring, "/faceanalysis.v1.FaceAnalysis/Unmapped", bearer(KEY_A))
    assert refused.value.code == grpc.StatusCode.PERMISSION_DENIED


def test_every_public_method_has_a_scope():
    from faceanalysis.v1 import image_input_pb2

    service = image_input_pb2.DESCRIPTOR.services_by_name["FaceAnalysis"]
    assert set(auth.METHOD_SCOPES) == {f"/faceanalysis.v1.FaceAnalysis/{m.name}" for m in service.methods}


def test_new_keys_look_as_documented():
    keys = {auth.new_key() for _ in range(100)}
    assert len(keys) == 100
    assert all(re.fullmatch(r"fa_[A-Za-z0-9]{40}", key) for key in keys)


def test_keys_create_prints_the_key_and_its_line(capsys, tmp_path):
    assert cli(["keys", "create", "--tenant", "acme", "--scopes", "read,analyze"]) == 0
    out, err = capsys.readouterr()
    key, line = out.strip(), err.strip()
    assert line == f"{auth.hash_key(key)} acme analyze,read"
    assert ring_of(line).find(key).scopes == {"analyze", "read"}

    keys = tmp_path / "keys.txt"
    keys.write_text(line)  # no newline at the end: the next line must still start on its own
    assert cli(["keys", "create", "--tenant", "other", "--append", str(keys)]) == 0
    out, err = capsys.readouterr()
    assert err.strip() == f"added a key for tenant other to {keys}"
    ring = auth.KeyRing.load(keys)
    assert ring.find(out.strip()).tenant == "other" and ring.find(key).tenant == "acme"
    fresh = tmp_path / "new-keys.txt"
    assert cli(["keys", "create", "--tenant", "acme", "--append", str(fresh)]) == 0
    assert fresh.stat().st_mode & 0o777 == 0o600 and len(fresh.read_text().splitlines()) == 1


def test_keys_create_refuses_bad_tenants_and_scopes(capsys):
    assert cli(["keys", "create", "--tenant", "Acme"]) == 2
    assert cli(["keys", "create", "--tenant", "acme", "--scopes", "admin"]) == 2
    out, err = capsys.readouterr()
    assert out == ""  # no key is shown for a line that could not be made
    assert "--tenant must be" in err and "--scopes: scopes must be a comma-separated subset" in err


def test_keys_hash(capsys, monkeypatch):
    import io

    assert cli(["keys", "hash", KEY_A]) == 0
    assert capsys.readouterr().out.strip() == auth.hash_key(KEY_A)
    monkeypatch.setattr("sys.stdin", io.StringIO(KEY_B + "\n"))
    assert cli(["keys", "hash"]) == 0
    assert capsys.readouterr().out.strip() == auth.hash_key(KEY_B)


def test_the_local_stack_says_whether_keys_are_on(tmp_path):
    from faceanalysis.cli.keys_cmd import local_stack_banner

    assert local_stack_banner(None).startswith("API keys: off for the local stack, every caller is tenant `default`")
    assert local_stack_banner(tmp_path / "keys") == f"API keys: on, from {tmp_path / 'keys'}: calls need " \
                                                    "`authorization: Bearer <key>`"


@pytest.mark.parametrize("incoming,kept", [
    ("req-42.a:b_c", True),
    ("x" * 64, True),
    ("x" * 65, False),                       # too long to log on every line
    ("evil\nfake log line", False),           # log injection
    (auth.new_key(), False),                  # an API key pasted into the wrong header
    ("", False),
    (None, False),
])
def test_only_plain_request_ids_reach_the_logs(incoming, kept):
    from faceanalysis.runtime.logging import accept_request_id

    accepted = accept_request_id(incoming)
    assert (accepted == incoming) is kept
    assert accepted and "\n" not in accepted
