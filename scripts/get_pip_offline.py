"""Stand-in for pip's get-pip.py, used by ansible-test to bootstrap pip in its
sanity venvs. The usual script is downloaded from a host this environment
cannot reach; this one uses the interpreter's bundled pip (ensurepip) and
then installs the requested versions from the package index, which is reachable.
"""
import subprocess
import sys


def main():
    args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
    subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade", "--default-pip"],
                          stdout=subprocess.DEVNULL)
    subprocess.check_call([sys.executable, "-m", "pip", "install", "--upgrade", *args])


if __name__ == "__main__":
    main()
