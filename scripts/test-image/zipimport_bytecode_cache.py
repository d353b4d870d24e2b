"""Test images only: every Ansible module run imports its module_utils from the AnsiballZ zip, which zipimport
compiles from source each time (~0.08 s of CPU per task). This keeps the compiled code, keyed by the Python
version, the module's path inside the zip and the hash of its source: what runs is what compile() returned
for that exact source. Root's runs only (the directory is root's: nothing world-writable is added to the
host). Loaded by a .pth file of the image's python3."""
import hashlib
import importlib.util
import marshal
import os
import zipimport

_compile_source = getattr(zipimport, "_compile_source", None)
_CACHE = f"/var/cache/zipimport-bytecode/{os.getuid()}"


def _cached_compile_source(pathname, source):
    inner = pathname.rsplit(".zip" + os.sep, 1)[-1]
    key = hashlib.sha256(importlib.util.MAGIC_NUMBER + inner.encode() + b"\0" + source).hexdigest()
    cached = os.path.join(_CACHE, key)
    try:
        with open(cached, "rb") as stream:
            return marshal.load(stream)
    except (OSError, EOFError, ValueError, TypeError):
        pass
    code = _compile_source(pathname, source)
    try:
        os.makedirs(_CACHE, mode=0o700, exist_ok=True)
        temporary = f"{cached}.{os.getpid()}"
        with open(temporary, "wb") as stream:
            marshal.dump(code, stream)
        os.replace(temporary, cached)
    except OSError:
        pass
    return code


if _compile_source is not None:
    zipimport._compile_source = _cached_compile_source
