"""benchmarks/latency_proxy.py against a real local gallery: it forwards calls unchanged over kept-alive
connections, counts them and the error-18 refusals, and sees requests that overlap. Overlap is made with a
barrier in the proxy's hook (every request waits there until all have arrived), never with sleeps, and no
test says anything about how long a call took."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest
import requests

from benchmarks.latency_proxy import LatencyProxy
from conftest import make_image, wait_until
from imgsync.gallery.client import GalleryClient, build_form, encode_form
from imgsync.libraries import TOKEN_PATH, get_library

#: Bound on any wait in these tests (a deadline for a stuck test, not a timing assertion).
DEADLINE = 60


def token(url: str, server) -> str:
    answer = requests.post(
        url + TOKEN_PATH,
        data={"grant_type": "client_credentials", "client_id": server.api_key, "client_secret": server.secret_key},
        timeout=DEADLINE,
    )
    return str(answer.json()["access_token"])


def test_forwards_calls_over_kept_alive_connections_and_counts_them(gallery_server) -> None:
    with (
        LatencyProxy(gallery_server.url, latency_s=0) as proxy,
        GalleryClient(proxy.url, gallery_server.api_key, gallery_server.secret_key) as client,
    ):
        sign = client.add("same_hq", image=make_image(1), brief="one")
        found = client.search("same_hq", image=make_image(1))
        assert [r.cont_sign for r in found.hits] == [sign]
        assert (proxy.requests, proxy.count("/add"), proxy.count("/search"), proxy.count(TOKEN_PATH)) == (3, 1, 1, 1)
        assert proxy.refusals == 0 and proxy.max_in_flight == 1 and proxy.in_flight == 0
        # One connection each side for three calls: keep-alive to the client and to the gallery.
        assert (proxy.client_connections, proxy.upstream_connections) == (1, 1)
    # The gallery itself holds the entry (the proxy forwarded the add, it did not answer it).
    with GalleryClient(gallery_server.url, gallery_server.api_key, gallery_server.secret_key) as direct:
        assert [r.cont_sign for r in direct.search("same_hq", image=make_image(1)).hits] == [sign]


def test_records_the_most_requests_in_flight_at_once(gallery_server) -> None:
    clients = 3
    # Each request waits in the hook until all three are there: they are then in flight together.
    barrier = threading.Barrier(clients, timeout=DEADLINE)
    answers: list[int] = []

    def call() -> None:
        with requests.Session() as session:
            answers.append(
                session.post(
                    proxy.url + TOKEN_PATH,
                    timeout=DEADLINE,
                    data={
                        "grant_type": "client_credentials",
                        "client_id": gallery_server.api_key,
                        "client_secret": gallery_server.secret_key,
                    },
                ).status_code
            )

    with LatencyProxy(gallery_server.url, latency_s=0.05, hook=barrier.wait) as proxy:
        threads = [threading.Thread(target=call) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(DEADLINE)
        assert answers == [200] * clients
        assert proxy.max_in_flight == clients and proxy.in_flight == 0 and proxy.requests == clients
        assert proxy.client_connections == clients


def test_counts_error_18_answers(tmp_path: Path) -> None:
    from imgsync.localgallery.server import start_in_thread

    # One call per 100 s for the key: the first add passes, the next ones within the window are refused.
    server = start_in_thread(tmp_path / "g", keys=[("ak", "sk")], qps=0.01)
    try:
        with LatencyProxy(server.url) as proxy, requests.Session() as session:
            access = token(proxy.url, server)
            codes = []
            for seed in range(3):
                body = encode_form(build_form("same_hq", "add", image=make_image(seed), brief=f"s{seed}"))
                answer = session.post(
                    proxy.url + get_library("same_hq").path("add"),
                    params={"access_token": access},
                    data=body,
                    timeout=DEADLINE,
                    headers={"Content-Type": "application/x-www-form-urlencoded"},
                )
                codes.append(answer.json().get("error_code"))
            assert codes[0] is None and 18 in codes  # the answers came through unchanged
            assert proxy.refusals == codes.count(18) and proxy.requests == 4
    finally:
        server.stop()


def test_a_call_whose_client_vanishes_while_held_still_reaches_the_gallery(gallery_server) -> None:
    """As a call already on the wire reaches the cloud: what kill -9 tests rely on."""
    release = threading.Event()
    access = token(gallery_server.url, gallery_server)
    body = encode_form(build_form("same_hq", "add", image=make_image(5), brief="orphan"))
    path = get_library("same_hq").path("add") + f"?access_token={access}"
    with LatencyProxy(gallery_server.url, hook=lambda: release.wait(DEADLINE)) as proxy:
        host, port = proxy.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=DEADLINE) as sock:
            sock.sendall(
                f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            wait_until(lambda: proxy.in_flight == 1, DEADLINE, "the add to be held")
        release.set()  # the client is gone: the proxy forwards the add all the same
        wait_until(lambda: proxy.requests == 1, DEADLINE, "the held add to be forwarded")
        assert proxy.calls[0].status == 200 and proxy.calls[0].error_code is None
    with GalleryClient(gallery_server.url, gallery_server.api_key, gallery_server.secret_key) as direct:
        assert [r.brief for r in direct.search("same_hq", image=make_image(5)).hits] == ["orphan"]


def test_an_upstream_that_does_not_answer_is_a_502_with_a_json_error(gallery_server) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))  # a port nobody listens on (bound, never listening)
        url = f"http://127.0.0.1:{unused.getsockname()[1]}"
        with LatencyProxy(url) as proxy:
            answer = requests.post(proxy.url + TOKEN_PATH, timeout=DEADLINE)
            assert answer.status_code == 502 and answer.json()["error_code"] == 502
            assert proxy.requests == 1


def test_rejects_a_negative_latency(gallery_server) -> None:
    with pytest.raises(ValueError, match="latency_s"):
        LatencyProxy(gallery_server.url, latency_s=-1)
