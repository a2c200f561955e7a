"""The local Kafka cluster's layout (no servers started): node addresses, quorum, replication settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.settings import Settings
from services.common.stack.manager import Stack, StackError


def _stack(tmp_path: Path, **kw: object) -> Stack:
    return Stack(Settings(stack={"state_dir": tmp_path, "kafka_controller_port": 20501}, **kw))


def test_single_node_is_the_default_and_keeps_its_layout(tmp_path: Path) -> None:
    st = _stack(tmp_path)
    assert st.n_nodes == 1 and st.nodes[0].dir == st.kdir
    props = st._kafka_props(st.nodes[0])
    assert "controller.quorum.voters=1@127.0.0.1:20501" in props
    assert "default.replication.factor=1" in props and "min.insync.replicas=1" in props


def test_three_nodes_take_the_bootstrap_addresses_and_form_one_quorum(tmp_path: Path) -> None:
    st = _stack(tmp_path, kafka_bootstrap="127.0.0.1:20500,127.0.0.1:20502,127.0.0.1:20504")
    st.set_nodes(3)
    assert [n.port for n in st.nodes] == [20500, 20502, 20504]
    assert [n.controller_port for n in st.nodes] == [20501, 20503, 20505]
    assert [n.dir.name for n in st.nodes] == ["kafka", "kafka-2", "kafka-3"]
    assert st.bootstrap == "127.0.0.1:20500,127.0.0.1:20502,127.0.0.1:20504"
    props = st._kafka_props(st.node(2))
    for line in (
        "node.id=2",
        "controller.quorum.voters=1@127.0.0.1:20501,2@127.0.0.1:20503,3@127.0.0.1:20505",
        "listeners=PLAINTEXT://127.0.0.1:20502,CONTROLLER://127.0.0.1:20503",
        "default.replication.factor=3",
        "min.insync.replicas=2",
        "offsets.topic.replication.factor=3",
        "transaction.state.log.min.isr=2",
        "unclean.leader.election.enable=false",
    ):
        assert line in props.splitlines(), line


def test_without_a_bootstrap_list_nodes_take_every_second_port(tmp_path: Path) -> None:
    st = _stack(tmp_path, kafka_bootstrap="127.0.0.1:20500")
    st.set_nodes(3)
    ports = [(n.port, n.controller_port) for n in st.nodes]
    assert ports == [(20500, 20501), (20502, 20503), (20504, 20505)]
    assert len({p for pair in ports for p in pair}) == 6


def test_node_count_of_an_existing_cluster_cannot_change(tmp_path: Path) -> None:
    st = _stack(tmp_path)
    st.kdir.mkdir(parents=True)
    (st.kdir / "nodes").write_text("3")
    assert _stack(tmp_path).n_nodes == 3  # status and down find every node
    with pytest.raises(StackError, match="has 3 Kafka node"):
        _stack(tmp_path).set_nodes(1)


def test_a_node_whose_pid_file_names_another_process_is_found_by_its_command_line(tmp_path: Path) -> None:
    """The cluster suite once saw a start retried while the first JVM was still coming up: the pid file
    then named the second JVM, which failed to bind and exited, and stopping the node missed the live one.
    The node's process is found by its marker and its own server.properties, and the pid file corrected."""
    import subprocess
    import sys

    from services.common.stack.manager import KAFKA_MARKER
    from services.common.stack.process import alive

    st = _stack(tmp_path, kafka_bootstrap="127.0.0.1:20500,127.0.0.1:20502,127.0.0.1:20504")
    st.set_nodes(3)
    node = st.node(3)
    node.dir.mkdir(parents=True)
    props = str(node.dir / "server.properties")
    # a stand-in for the JVM: its command line holds the marker and the node's properties path
    fake = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", KAFKA_MARKER, props])
    try:
        assert alive(fake.pid, KAFKA_MARKER)  # (waits until the kernel shows its command line)
        (node.dir / "pid").write_text("999999999")  # a pid that cannot exist
        assert st.node_pid(3) == fake.pid
        assert (node.dir / "pid").read_text() == str(fake.pid)
        assert st.node_pid(2) is None  # another node's path is not this node's
        assert st.kill_node(3) == fake.pid
        fake.wait(10)
        assert st.node_pid(3) is None
    finally:
        fake.kill()
        fake.wait(10)


def test_a_program_just_started_is_alive_with_its_marker() -> None:
    """Right after Popen returns the kernel may show an empty command line for a moment (longer on a busy
    box): a start of the stack took its new Kafka JVM for dead then and started a second one."""
    import subprocess
    import sys

    from services.common.stack.process import alive

    for i in range(30):
        tag = f"auditpipe-test-marker-{i}"
        p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", tag])
        try:
            assert alive(p.pid, tag)
        finally:
            p.kill()
            p.wait(10)
