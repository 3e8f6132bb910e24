"""A small shop written the way many Python services are, not for Stormwatch.

Two services from one file, each run under the stock OpenTelemetry auto-instrumentation
(`opentelemetry-instrument python app.py ...`, configured only by the standard OTEL_*
environment variables) — nothing in it knows Stormwatch:

- `shop`: Flask on PyMySQL, a MariaDB primary for writes and a replica for reads, Redis as a
  page cache, and `pricing` over `requests`. Its pages and its uploads each sit behind a
  concurrency limit that answers 503 when full, as a gunicorn worker limit or a proxy would.
- `pricing`: the other team's service; `PUT /admin/delay?ms=N` makes it slow.

    python app.py shop --listen 127.0.0.1:8000 --primary mysql://u:p@h:port/db \
        --replica mysql://u:p@h:port/db --redis redis://h:port --pricing http://h:port
    python app.py pricing --listen 127.0.0.1:8001
"""

import argparse
import json
import threading
import time
from urllib.parse import urlparse

import pymysql
import redis
import requests
from flask import Flask, Response, jsonify, request

CATEGORIES = ["books", "games", "music", "tools", "garden"]


def connect(url):
    u = urlparse(url)
    return pymysql.connect(
        host=u.hostname,
        port=u.port or 3306,
        user=u.username,
        password=u.password or "",
        database=u.path.lstrip("/") or None,
        connect_timeout=2,
        read_timeout=10,
        write_timeout=10,
        autocommit=True,
    )


class Limiter:
    """At most `n` requests at once; the rest are refused at once."""

    def __init__(self, n):
        self.sem = threading.BoundedSemaphore(n)

    def acquire(self):
        return self.sem.acquire(blocking=False)

    def release(self):
        self.sem.release()


def busy():
    return Response("busy, try again\n", status=503, headers={"Retry-After": "1"})


def shop(args):
    app = Flask("shop")
    cache = redis.Redis.from_url(args.redis, socket_timeout=5)
    pages = Limiter(args.max_concurrent)
    uploads = Limiter(args.uploads_max_concurrent)
    http = requests.Session()

    db = connect(args.primary)
    with db.cursor() as c:
        c.execute(
            "CREATE TABLE IF NOT EXISTS items (id INT AUTO_INCREMENT PRIMARY KEY, "
            "category VARCHAR(32) NOT NULL, name VARCHAR(200) NOT NULL, price_cents INT NOT NULL, "
            "KEY (category))"
        )
        c.execute(
            "CREATE TABLE IF NOT EXISTS orders (id INT AUTO_INCREMENT PRIMARY KEY, "
            "item_id INT NOT NULL, quantity INT NOT NULL, created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP)"
        )
        c.execute(
            "CREATE TABLE IF NOT EXISTS uploads (id INT AUTO_INCREMENT PRIMARY KEY, "
            "bytes INT NOT NULL, created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP)"
        )
        c.execute("SELECT COUNT(*) FROM items")
        if c.fetchone()[0] == 0:
            rows = [(cat, f"{cat} #{i}", 100 + i) for cat in CATEGORIES for i in range(50)]
            c.executemany("INSERT INTO items (category, name, price_cents) VALUES (%s, %s, %s)", rows)
    db.close()

    @app.get("/healthz")
    def healthz():
        return "ok\n"

    @app.get("/items")
    def items():
        if not pages.acquire():
            return busy()
        try:
            category = request.args.get("category", "books")
            key = f"items:{category}"
            cached = cache.get(key)
            if cached is None:
                conn = connect(args.replica)
                try:
                    with conn.cursor() as c:
                        c.execute(
                            "SELECT id, name, price_cents FROM items WHERE category = %s ORDER BY id LIMIT 20",
                            (category,),
                        )
                        rows = [{"id": r[0], "name": r[1], "price": r[2]} for r in c.fetchall()]
                finally:
                    conn.close()
                cache.set(key, json.dumps(rows), ex=2)
            else:
                rows = json.loads(cached)
            cache.incr(f"views:{category}")
            prices = http.get(f"{args.pricing}/prices", params={"category": category}, timeout=10)
            prices.raise_for_status()
            return jsonify({"items": rows, "discount": prices.json()["discount"]})
        finally:
            pages.release()

    @app.post("/orders")
    def order():
        body = request.get_json(force=True, silent=True) or {}
        conn = connect(args.primary)
        try:
            with conn.cursor() as c:
                c.execute(
                    "INSERT INTO orders (item_id, quantity) VALUES (%s, %s)",
                    (int(body.get("item_id", 1)), int(body.get("quantity", 1))),
                )
                order_id = c.lastrowid
        finally:
            conn.close()
        return jsonify({"id": order_id}), 201

    @app.post("/upload")
    def upload():
        if not uploads.acquire():
            return busy()
        try:
            data = request.get_data()
            # Stands for the work an upload costs: hashing, resizing...
            digest = 0
            for i in range(0, len(data), 64):
                digest = (digest * 31 + data[i]) & 0xFFFFFFFF
            conn = connect(args.primary)
            try:
                with conn.cursor() as c:
                    c.execute("INSERT INTO uploads (bytes) VALUES (%s)", (len(data),))
            finally:
                conn.close()
            return jsonify({"bytes": len(data), "digest": digest}), 201
        finally:
            uploads.release()

    return app


def pricing(args):
    app = Flask("pricing")
    delay = {"ms": 0}

    @app.get("/healthz")
    def healthz():
        return "ok\n"

    @app.get("/prices")
    def prices():
        if delay["ms"]:
            time.sleep(delay["ms"] / 1000)
        return jsonify({"category": request.args.get("category"), "discount": 0.1})

    @app.put("/admin/delay")
    def set_delay():
        delay["ms"] = int(request.args.get("ms", "0"))
        return jsonify(delay)

    return app


def main():
    p = argparse.ArgumentParser()
    p.add_argument("role", choices=["shop", "pricing"])
    p.add_argument("--listen", required=True)
    p.add_argument("--primary")
    p.add_argument("--replica")
    p.add_argument("--redis")
    p.add_argument("--pricing")
    p.add_argument("--max-concurrent", type=int, default=8)
    p.add_argument("--uploads-max-concurrent", type=int, default=4)
    args = p.parse_args()
    app = shop(args) if args.role == "shop" else pricing(args)
    host, port = args.listen.rsplit(":", 1)
    app.run(host=host, port=int(port), threaded=True)


if __name__ == "__main__":
    main()
