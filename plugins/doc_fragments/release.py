# -*- coding: utf-8 -*-
# Copyright: botstack.deploy contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # Options shared by the release and release_info modules.
    DOCUMENTATION = r"""
options:
  app_root:
    description:
      - Absolute path of the application root. Releases live in C(<app_root>/releases/<id>/),
        each with a manifest C(.release.json); C(<app_root>/current) is a relative symlink to the
        active one.
    type: path
    required: true
notes:
  - Release order comes from the manifests' sequence numbers, never from directory mtimes.
  - Writers of one I(app_root) are serialised with an C(flock) on C(<app_root>/.releases.lock).
"""
