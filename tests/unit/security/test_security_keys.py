"""Key pairs: certificate files compatible with pyzmq, a private secret, clear typed errors."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import zmq
import zmq.auth

from bus.errors import ConfigError
from bus.security.errors import KeyFileError
from bus.security.keyring import Keyring
from bus.security.keys import (
    KeyPair,
    generate_keypair,
    load_keypair,
    load_public_key,
    parse_certificate,
    parse_z85_key,
)


@pytest.fixture
def keydir(tmp_path: Path) -> Path:
    return tmp_path / "keys"


class TestGenerate:
    def test_writes_a_public_and_a_private_secret_file(self, keydir: Path) -> None:
        old = os.umask(0o022)
        try:
            files = generate_keypair(keydir, "fr1")
        finally:
            os.umask(old)
        assert files.public_path == keydir / "fr1.key"
        assert files.secret_path == keydir / "fr1.key_secret"
        assert stat.S_IMODE(files.secret_path.stat().st_mode) == 0o600
        assert stat.S_IMODE(files.public_path.stat().st_mode) == 0o644
        assert stat.S_IMODE(keydir.stat().st_mode) == 0o700
        assert b"secret-key" not in files.public_path.read_bytes()

    def test_files_load_with_pyzmq(self, keydir: Path) -> None:
        files = generate_keypair(keydir, "fr1", metadata={"role": "actor"})
        public, secret = zmq.auth.load_certificate(files.secret_path)
        assert public == files.public_key
        assert secret is not None and zmq.curve_public(secret) == public
        assert zmq.auth.load_certificate(files.public_path) == (files.public_key, None)
        assert b"role = actor" in files.secret_path.read_bytes()

    def test_pyzmq_certificates_load_here(self, keydir: Path) -> None:
        keydir.mkdir()
        public_file, secret_file = zmq.auth.create_certificates(keydir, "peer")
        os.chmod(secret_file, 0o600)  # pyzmq leaves it as the umask makes it
        pair = load_keypair(file=secret_file)
        assert pair.public == zmq.auth.load_certificate(public_file)[0]
        assert load_public_key(file=public_file) == pair.public

    def test_refuses_to_overwrite(self, keydir: Path) -> None:
        first = generate_keypair(keydir, "fr1")
        with pytest.raises(KeyFileError) as err:
            generate_keypair(keydir, "fr1")
        assert err.value.problem == "exists"
        assert "fr1.key" in str(err.value) and "overwrite" in str(err.value)
        assert load_public_key(file=first.public_path) == first.public_key

    def test_refuses_if_only_the_public_file_exists(self, keydir: Path) -> None:
        keydir.mkdir()
        (keydir / "fr1.key").write_text("not mine")
        with pytest.raises(KeyFileError, match=r"fr1\.key: already exists"):
            generate_keypair(keydir, "fr1")
        assert not (keydir / "fr1.key_secret").exists()

    def test_overwrite_makes_a_new_pair(self, keydir: Path) -> None:
        first = generate_keypair(keydir, "fr1")
        second = generate_keypair(keydir, "fr1", overwrite=True)
        assert second.public_key != first.public_key
        assert load_keypair(file=second.secret_path).public == second.public_key
        assert stat.S_IMODE(second.secret_path.stat().st_mode) == 0o600

    @pytest.mark.parametrize("name", ["", "../evil", "a/b", ".hidden", "-x", "a b"])
    def test_bad_names(self, keydir: Path, name: str) -> None:
        with pytest.raises(KeyFileError, match="not a valid key name"):
            generate_keypair(keydir, name)
        assert not keydir.exists()

    def test_unwritable_directory(self, tmp_path: Path) -> None:
        blocker = tmp_path / "file"
        blocker.write_text("")
        with pytest.raises(KeyFileError) as err:
            generate_keypair(blocker / "keys", "fr1")
        assert err.value.problem == "unreadable"


class TestLoadFromFile:
    def test_secret_file(self, keydir: Path) -> None:
        files = generate_keypair(keydir, "fr1")
        pair = load_keypair(file=files.secret_path)
        assert pair.public == files.public_key and pair.secret is not None
        assert pair.secret.decode() not in repr(pair)

    def test_missing(self, keydir: Path) -> None:
        with pytest.raises(KeyFileError) as err:
            load_keypair(file=keydir / "nope.key_secret")
        assert err.value.problem == "missing"
        assert err.value.source == str(keydir / "nope.key_secret")
        assert isinstance(err.value, ConfigError)

    @pytest.mark.parametrize(("bits", "words"), [(0o640, "group"), (0o604, "other users")])
    def test_too_open_secret_is_refused(self, keydir: Path, bits: int, words: str) -> None:
        files = generate_keypair(keydir, "fr1")
        files.secret_path.chmod(bits)
        with pytest.raises(KeyFileError) as err:
            load_keypair(file=files.secret_path)
        assert err.value.problem == "permissions"
        assert words in str(err.value) and "chmod 600" in str(err.value)

    def test_unreadable(self, keydir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        files = generate_keypair(keydir, "fr1")

        def refuse(self: Path) -> bytes:  # chmod 000 would not stop root, who runs CI images
            raise PermissionError(13, "Permission denied", str(self))

        monkeypatch.setattr(Path, "read_bytes", refuse)
        with pytest.raises(KeyFileError, match="cannot read: Permission denied") as err:
            load_keypair(file=files.secret_path)
        assert err.value.problem == "unreadable"

    def test_a_directory(self, keydir: Path) -> None:
        keydir.mkdir()
        with pytest.raises(KeyFileError) as err:
            load_public_key(file=keydir)
        assert err.value.problem == "unreadable"

    def test_public_file_is_not_a_key_pair(self, keydir: Path) -> None:
        files = generate_keypair(keydir, "fr1")
        with pytest.raises(KeyFileError, match="public key only"):
            load_keypair(file=files.public_path)

    def test_public_key_from_a_secret_file_must_be_private(self, keydir: Path) -> None:
        files = generate_keypair(keydir, "fr1")
        assert load_public_key(file=files.secret_path) == files.public_key
        files.secret_path.chmod(0o644)
        with pytest.raises(KeyFileError, match=r"readable or writable by other users"):
            load_public_key(file=files.secret_path)


class TestMalformed:
    def test_no_public_key(self) -> None:
        with pytest.raises(KeyFileError, match="no public-key line") as err:
            parse_certificate(b"# nothing\nmetadata\n", "x.key")
        assert err.value.problem == "malformed"

    def test_wrong_length(self) -> None:
        with pytest.raises(KeyFileError, match="40 Z85 characters, found 5"):
            parse_certificate(b'curve\n    public-key = "abcde"\n', "x.key")

    def test_not_z85(self) -> None:
        with pytest.raises(KeyFileError, match="not a Z85"):
            parse_z85_key("~" * 40, "x")

    def test_secret_of_another_pair(self) -> None:
        public, _ = zmq.curve_keypair()
        _, other_secret = zmq.curve_keypair()
        text = (
            f'curve\n public-key = "{public.decode()}"\n secret-key = "{other_secret.decode()}"\n'
        )
        with pytest.raises(KeyFileError, match="does not match"):
            parse_certificate(text.encode(), "x.key_secret")

    def test_the_key_text_is_never_quoted(self) -> None:
        secretish = "S" * 39
        with pytest.raises(KeyFileError) as err:
            parse_z85_key(secretish, "$LINEBUS_KEY")
        assert secretish not in str(err.value)


class TestLoadFromEnvironmentAndValue:
    def test_env(self) -> None:
        public, secret = zmq.curve_keypair()
        pair = load_keypair(env="LINEBUS_KEY", environ={"LINEBUS_KEY": secret.decode() + "\n"})
        assert pair == KeyPair(public, secret)

    def test_env_missing(self) -> None:
        with pytest.raises(KeyFileError, match=r"\$LINEBUS_KEY: environment variable") as err:
            load_keypair(env="LINEBUS_KEY", environ={})
        assert err.value.problem == "missing" and err.value.source == "$LINEBUS_KEY"

    def test_env_malformed_names_the_variable(self) -> None:
        with pytest.raises(KeyFileError, match=r"^\[config_error\] \$K: "):
            load_keypair(env="K", environ={"K": "short"})

    def test_env_defaults_to_the_process_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        public, secret = zmq.curve_keypair()
        monkeypatch.setenv("LINEBUS_TEST_KEY", secret.decode())
        assert load_keypair(env="LINEBUS_TEST_KEY").public == public

    def test_value(self) -> None:
        public, secret = zmq.curve_keypair()
        assert load_keypair(value=secret.decode()) == KeyPair(public, secret)
        assert load_public_key(value=public.decode()) == public

    def test_public_key_from_env(self) -> None:
        public, _ = zmq.curve_keypair()
        assert load_public_key(env="B", environ={"B": public.decode()}) == public
        with pytest.raises(KeyFileError, match=r"\$B"):
            load_public_key(env="B", environ={})

    def test_exactly_one_source(self) -> None:
        with pytest.raises(TypeError, match="exactly one"):
            load_keypair()
        with pytest.raises(TypeError, match="exactly one"):
            load_keypair(file="a", env="B")


class TestKeyring:
    def test_directory_of_public_keys(self, keydir: Path) -> None:
        a = generate_keypair(keydir, "alice")
        b = generate_keypair(keydir, "fr1")
        (keydir / "notes.txt").write_text("ignored")
        ring = Keyring.load(keydir)
        assert dict(ring) == {"alice": a.public_key, "fr1": b.public_key}
        assert ring.names == {"alice", "fr1"}
        from zmq.utils import z85

        assert ring.identity_of(z85.decode(a.public_key)) == "alice"
        assert ring.identity_of(b"\0" * 32) is None

    def test_missing_directory(self, keydir: Path) -> None:
        with pytest.raises(KeyFileError) as err:
            Keyring.load(keydir)
        assert err.value.problem == "missing"

    def test_world_writable_directory_is_refused(self, keydir: Path) -> None:
        generate_keypair(keydir, "alice")
        keydir.chmod(0o777)
        with pytest.raises(KeyFileError, match="writable by other users") as err:
            Keyring.load(keydir)
        assert err.value.problem == "permissions"

    def test_malformed_file_is_named(self, keydir: Path) -> None:
        generate_keypair(keydir, "alice")
        (keydir / "bad.key").write_text("garbage\n")
        with pytest.raises(KeyFileError, match=r"bad\.key: no public-key line"):
            Keyring.load(keydir)

    def test_one_key_two_names_is_refused(self, keydir: Path) -> None:
        a = generate_keypair(keydir, "alice")
        (keydir / "mallory.key").write_bytes(a.public_path.read_bytes())
        with pytest.raises(KeyFileError, match="already identity 'alice'"):
            Keyring.load(keydir)

    def test_from_mapping_and_merge(self, keydir: Path) -> None:
        a = generate_keypair(keydir, "alice")
        public, _ = zmq.curve_keypair()
        inline = Keyring({"mes": public.decode()}, source="[security.keys]")
        ring = Keyring.load(keydir).merged(inline)
        assert ring.names == {"alice", "mes"} and ring["mes"] == public
        with pytest.raises(KeyFileError, match=r"\[security.keys\]: alice: identity 'alice'"):
            ring.merged(Keyring({"alice": zmq.curve_keypair()[0]}, source="[security.keys]"))
        assert ring.merged(Keyring({"alice": a.public_key})).names == ring.names

    def test_bad_inline_key(self) -> None:
        with pytest.raises(KeyFileError, match=r"\[security.keys\]: mes: a CURVE key"):
            Keyring({"mes": "short"}, source="[security.keys]")
