"""A tiny HTTP client for the tests of brt-server's HTTP API (standard library only)."""
import http.client
import json


class Http:
    def __init__(self, port, timeout=300):
        self.port = port
        self.timeout = timeout

    def request(self, method, path, body=None, raw=None, headers=None):
        """Returns (status, parsed JSON or text)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        h = {"Content-Type": "application/json"} if data is not None else {}
        h.update(headers or {})
        conn.request(method, path, body=data, headers=h)
        resp = conn.getresponse()
        payload = resp.read()
        conn.close()
        ctype = resp.getheader("Content-Type", "")
        if "json" in ctype:
            return resp.status, json.loads(payload)
        return resp.status, payload.decode(errors="replace")

    def post(self, path, body):
        return self.request("POST", path, body)

    def get(self, path):
        return self.request("GET", path)

    def stream(self, body):
        """POST /v1/completions with stream=true; yields each event's parsed JSON (not [DONE])."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        conn.request("POST", "/v1/completions", body=json.dumps({**body, "stream": True}).encode(),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200, resp.read()
        assert resp.getheader("Content-Type").startswith("text/event-stream")
        buf = b""
        done = False
        while not done:
            chunk = resp.read1(65536) if hasattr(resp, "read1") else resp.read(65536)
            if not chunk:
                break
            buf += chunk
            while b"\n\n" in buf:
                event, buf = buf.split(b"\n\n", 1)
                assert event.startswith(b"data: "), event
                data = event[6:]
                if data == b"[DONE]":
                    done = True
                    break
                yield json.loads(data)
        conn.close()
        assert done, "the stream ended without data: [DONE]"
