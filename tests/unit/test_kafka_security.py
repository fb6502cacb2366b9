"""Kafka TLS/SASL settings: parsing and validation (recstream/config.py), and the one mapping to
client options for kafka-python and Faust alike (recstream/adapters/kafka.py). No broker: the
certificates are made with the openssl command line, the clients are never connected."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from faust.auth import SASLCredentials, SSLCredentials
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from recstream.adapters import kafka as kafka_adapter
from recstream.adapters.kafka import faust_broker_credentials, kafka_client_options, ssl_context
from recstream.config import PROJECT_ROOT, Settings

BROKER = "kafka://127.0.0.1:9392"
SECRET = "s3cret-for-the-test"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA certificate, and a client certificate and key: ``ca``, ``cert``, ``key``."""
    d = tmp_path_factory.mktemp("pki")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    openssl(
        "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-nodes", "-days", "2", "-subj", "/CN=test CA", "-keyout", "ca.key", "-out", "ca.pem",
    )  # fmt: skip
    openssl(
        "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-nodes", "-days", "2", "-subj", "/CN=client", "-keyout", "client.key",
        "-out", "client.pem",
    )  # fmt: skip
    return {"ca": d / "ca.pem", "cert": d / "client.pem", "key": d / "client.key"}


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "kafka.password"
    path.write_text(SECRET + "\n")  # as `echo` writes it
    return path


def sasl_ssl(pki: dict[str, Path], password_file: Path, **env: str) -> Settings:
    return Settings.from_env(
        {
            "RECSTREAM_BROKER": BROKER,
            "RECSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "RECSTREAM_KAFKA_USERNAME": "recstream",
            "RECSTREAM_KAFKA_PASSWORD_FILE": str(password_file),
            "RECSTREAM_KAFKA_SSL_CAFILE": str(pki["ca"]),
            **env,
        }
    )


# -- settings ---------------------------------------------------------------------------------
def test_defaults_are_plaintext_without_credentials() -> None:
    s = Settings()
    assert s.kafka_security_protocol == "PLAINTEXT" and s.kafka_sasl_mechanism == "SCRAM-SHA-512"
    assert not (s.kafka_username or s.kafka_password or s.kafka_password_file)
    assert s.kafka_ssl_check_hostname is True


def test_from_env_reads_every_security_setting(pki: dict[str, Path], password_file: Path) -> None:
    s = sasl_ssl(
        pki,
        password_file,
        RECSTREAM_KAFKA_SASL_MECHANISM="SCRAM-SHA-256",
        RECSTREAM_KAFKA_SSL_CERTFILE=str(pki["cert"]),
        RECSTREAM_KAFKA_SSL_KEYFILE=str(pki["key"]),
        RECSTREAM_KAFKA_SSL_CHECK_HOSTNAME="false",
    )
    assert (s.kafka_security_protocol, s.kafka_sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-256")
    assert (s.kafka_username, s.kafka_password_file) == ("recstream", str(password_file))
    assert s.kafka_ssl_cafile == str(pki["ca"]) and s.kafka_ssl_certfile == str(pki["cert"])
    assert s.kafka_ssl_keyfile == str(pki["key"]) and s.kafka_ssl_check_hostname is False


@pytest.mark.parametrize(
    ("raw", "value"), [("0", False), ("no", False), ("False", False), ("1", True), ("on", True)]
)
def test_bool_settings_are_spelled_out(raw: str, value: bool) -> None:
    env = {"RECSTREAM_KAFKA_SSL_CHECK_HOSTNAME": raw}
    assert Settings.from_env(env).kafka_ssl_check_hostname is value


def test_a_bool_setting_refuses_anything_else() -> None:
    with pytest.raises(ValueError, match="RECSTREAM_KAFKA_SSL_CHECK_HOSTNAME: expected bool"):
        Settings.from_env({"RECSTREAM_KAFKA_SSL_CHECK_HOSTNAME": "maybe"})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RECSTREAM_KAFKA_SECURITY_PROTOCOL": "TLS"}, "expected one of PLAINTEXT, SSL"),
        ({"RECSTREAM_KAFKA_SECURITY_PROTOCOL": "sasl_ssl"}, "got 'sasl_ssl'"),
        ({"RECSTREAM_KAFKA_SASL_MECHANISM": "GSSAPI"}, "RECSTREAM_KAFKA_SASL_MECHANISM"),
        (
            {"RECSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "RECSTREAM_KAFKA_PASSWORD": "x"},
            "RECSTREAM_KAFKA_USERNAME is required with SASL_SSL",
        ),
        (
            {
                "RECSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "RECSTREAM_KAFKA_USERNAME": "u",
            },
            "exactly one of RECSTREAM_KAFKA_PASSWORD and .*_FILE, got neither",
        ),
        (
            {
                "RECSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "RECSTREAM_KAFKA_USERNAME": "u",
                "RECSTREAM_KAFKA_PASSWORD": "x",
                "RECSTREAM_KAFKA_PASSWORD_FILE": "/run/secrets/kafka",
            },
            "got both",
        ),
        ({"RECSTREAM_KAFKA_USERNAME": "u"}, "is PLAINTEXT, which sends none: use SASL_SSL"),
        (
            {"RECSTREAM_KAFKA_SECURITY_PROTOCOL": "SSL", "RECSTREAM_KAFKA_PASSWORD": "x"},
            "is SSL, which sends none",
        ),
        ({"RECSTREAM_KAFKA_SSL_CAFILE": "/ca.pem"}, "PLAINTEXT, which does not use TLS"),
        (
            {
                "RECSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "RECSTREAM_KAFKA_USERNAME": "u",
                "RECSTREAM_KAFKA_PASSWORD": "x",
                "RECSTREAM_KAFKA_SSL_CAFILE": "/ca.pem",
            },
            "SASL_PLAINTEXT, which does not use TLS",
        ),
        (
            {"RECSTREAM_KAFKA_SECURITY_PROTOCOL": "SSL", "RECSTREAM_KAFKA_SSL_KEYFILE": "/k.pem"},
            "RECSTREAM_KAFKA_SSL_KEYFILE needs RECSTREAM_KAFKA_SSL_CERTFILE",
        ),
    ],
)
def test_bad_combinations_are_refused_with_the_variable_to_fix(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Settings.from_env(env)


def test_the_password_never_shows_in_repr() -> None:
    s = Settings(kafka_security_protocol="SASL_SSL", kafka_username="u", kafka_password=SECRET)
    assert SECRET not in repr(s) and "kafka_password=" not in repr(s)
    assert s.kafka_sasl_password() == SECRET


def test_the_password_file_is_read_without_its_newline(password_file: Path) -> None:
    s = Settings(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_username="u",
        kafka_password_file=str(password_file),
    )
    assert s.kafka_sasl_password() == SECRET
    password_file.write_text("rotated\n")
    assert s.kafka_sasl_password() == "rotated"  # read again for every client


@pytest.mark.parametrize("content", [None, "", "\n"], ids=["missing", "empty", "newline"])
def test_an_unusable_password_file_is_a_clear_error(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "pw"
    if content is not None:
        path.write_text(content)
    s = Settings(
        kafka_security_protocol="SASL_SSL", kafka_username="u", kafka_password_file=str(path)
    )
    with pytest.raises(ValueError, match=f"RECSTREAM_KAFKA_PASSWORD_FILE: .*{path}"):
        s.kafka_sasl_password()


# -- kafka-python ------------------------------------------------------------------------------
def test_plaintext_options_are_the_bootstrap_servers_only() -> None:
    options = kafka_client_options(Settings(broker="kafka://a:9092,kafka://b:9093"))
    assert options == {"bootstrap_servers": ["a:9092", "b:9093"], "security_protocol": "PLAINTEXT"}


def test_sasl_ssl_options(pki: dict[str, Path], password_file: Path) -> None:
    options = kafka_client_options(sasl_ssl(pki, password_file))
    context = options.pop("ssl_context")
    assert options == {
        "bootstrap_servers": ["127.0.0.1:9392"],
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "recstream",
        "sasl_plain_password": SECRET,
    }
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "test CA"),),)]


def test_sasl_plaintext_has_no_tls() -> None:
    s = Settings(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="PLAIN",
        kafka_username="u",
        kafka_password="p",
    )
    options = kafka_client_options(s)
    assert "ssl_context" not in options
    assert options["security_protocol"] == "SASL_PLAINTEXT" and options["sasl_mechanism"] == "PLAIN"


def test_ssl_with_a_client_certificate_and_no_hostname_check(pki: dict[str, Path]) -> None:
    s = Settings(
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=str(pki["ca"]),
        kafka_ssl_certfile=str(pki["cert"]),
        kafka_ssl_keyfile=str(pki["key"]),
        kafka_ssl_check_hostname=False,
    )
    options = kafka_client_options(s)
    assert options["security_protocol"] == "SSL" and "sasl_mechanism" not in options
    # The chain is still verified; only the name check is off.
    assert options["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    assert options["ssl_context"].check_hostname is False


def test_a_missing_ca_file_fails_when_the_context_is_built(tmp_path: Path) -> None:
    s = Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=str(tmp_path / "nope.pem"))
    with pytest.raises(FileNotFoundError):
        ssl_context(s)


@pytest.mark.parametrize("factory", ["make_producer", "make_consumer", "admin_client"])
def test_every_kafka_python_client_gets_the_options(
    factory: str, pki: dict[str, Path], password_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}

    class Client:
        def __init__(self, **kwargs: Any) -> None:
            seen.update(kwargs)

        def close(self) -> None:
            pass

    for name in ("KafkaProducer", "KafkaConsumer", "KafkaAdminClient"):
        monkeypatch.setattr(kafka_adapter, name, Client)
    s = sasl_ssl(pki, password_file)
    client = getattr(kafka_adapter, factory)(s)
    if factory == "admin_client":
        with client:
            pass
    assert seen["security_protocol"] == "SASL_SSL" and seen["sasl_plain_password"] == SECRET
    assert isinstance(seen["ssl_context"], ssl.SSLContext)
    assert seen["bootstrap_servers"] == ["127.0.0.1:9392"] and seen["client_id"]


# -- Faust ------------------------------------------------------------------------------------
def test_plaintext_needs_no_faust_credentials() -> None:
    assert faust_broker_credentials(Settings()) is None


@pytest.mark.parametrize("protocol", ["SSL", "SASL_PLAINTEXT", "SASL_SSL"])
def test_faust_gets_what_kafka_python_gets(
    protocol: str, pki: dict[str, Path], password_file: Path
) -> None:
    """Through Faust's own translation to aiokafka, the same protocol, mechanism and login."""
    env = {"RECSTREAM_KAFKA_SECURITY_PROTOCOL": protocol}
    if protocol == "SASL_PLAINTEXT":
        env["RECSTREAM_KAFKA_SSL_CAFILE"] = ""
    if protocol == "SSL":
        env |= {"RECSTREAM_KAFKA_USERNAME": "", "RECSTREAM_KAFKA_PASSWORD_FILE": ""}
    s = sasl_ssl(pki, password_file, **env)
    credentials = faust_broker_credentials(s)
    assert isinstance(credentials, SSLCredentials if protocol == "SSL" else SASLCredentials)
    faust_side = credentials_to_aiokafka_auth(credentials)
    python_side = kafka_client_options(s)
    python_side.pop("bootstrap_servers")
    faust_context, python_context = (
        faust_side.pop("ssl_context"),
        python_side.pop("ssl_context", None),
    )
    assert faust_side == python_side
    if protocol == "SASL_PLAINTEXT":
        assert faust_context is None and python_context is None
    else:
        assert faust_context.check_hostname == python_context.check_hostname is True
        assert faust_context.get_ca_certs() == python_context.get_ca_certs() != []
    assert SECRET not in repr(credentials)


def test_the_faust_app_is_built_with_the_credentials(
    pki: dict[str, Path], password_file: Path
) -> None:
    """streams/app.py reads the settings at import: in a fresh interpreter."""
    env = {
        **os.environ,
        "RECSTREAM_BROKER": BROKER,
        "RECSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "RECSTREAM_KAFKA_USERNAME": "recstream",
        "RECSTREAM_KAFKA_PASSWORD_FILE": str(password_file),
        "RECSTREAM_KAFKA_SSL_CAFILE": str(pki["ca"]),
    }
    code = (
        "from streams.app import app; c = app.conf.broker_credentials; "
        "print(type(c).__name__, c.protocol.value, c.mechanism.value, c.username, "
        f"c.password == {SECRET!r}, c.ssl_context.check_hostname)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert out.split() == [
        "SASLCredentials",
        "SASL_SSL",
        "SCRAM-SHA-512",
        "recstream",
        "True",
        "True",
    ]
