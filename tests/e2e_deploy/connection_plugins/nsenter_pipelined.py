"""community.docker.nsenter with Ansible's pipelining: a module goes to the container's
Python on stdin instead of as a file that is written, made executable, run and removed
(five nsenter calls per task become one). The tests' connection; servers use SSH."""

from ansible_collections.community.docker.plugins.connection.nsenter import (
    DOCUMENTATION as _BASE_DOC,
)
from ansible_collections.community.docker.plugins.connection.nsenter import (
    Connection as _NsenterConnection,
)

DOCUMENTATION = _BASE_DOC.replace("name: nsenter\n", "name: nsenter_pipelined\n", 1)


class Connection(_NsenterConnection):
    transport = "nsenter_pipelined"
    has_pipelining = True
