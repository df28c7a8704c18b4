"""Throw-away servers need distinct ports: Triton refuses HTTP and metrics on the same one."""

from liveness.inference.triton_server import TritonServer
from liveness.ports import free_ports


def test_free_ports_are_distinct_and_bindable():
    import socket

    for _ in range(50):
        ports = free_ports(3)
        assert len(set(ports)) == 3
    for port in free_ports(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_triton_server_gets_three_distinct_ports(tmp_path):
    srv = TritonServer(tmp_path)
    assert len({srv.http_port, srv.grpc_port, srv.metrics_port}) == 3
    assert TritonServer(tmp_path, 8000, 8001, 8002).metrics_port == 8002
