"""Write the bundled sample: a week of a small web shop's events, as `append --batch` input.

Deterministic (seeded, standard library only): running it again rewrites
byte-identical files.

    events.jsonl       3,000 events: one JSON object per line (type, key, subject, source, data)
    cloudevents.jsonl  5 CloudEvents 1.0 JSON objects, the other input shape `append --batch` accepts

Usage: python sample-data/generate.py [OUT_DIR]   (default: the directory of this file)
"""

from __future__ import annotations

import heapq
import json
import random
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

SEED = 20261127
EVENT_COUNT = 3000
START = datetime(2026, 11, 20, 7, 0, 0, tzinfo=UTC)

FIRST_NAMES = ["Ada", "Bruno", "Chloé", "Dmitri", "Elif", "Farah", "Gustav", "Hana", "Idris", "Jonas", "Kiri",
               "Lena", "Mateo", "Nadia", "Oskar", "Priya", "Quentin", "Rosa", "Sven", "Tomás", "Uma", "Viktor",
               "Wen", "Yusuf", "Zoë"]
LAST_NAMES = ["Almeida", "Brandt", "Castillo", "Dubois", "Eriksen", "Fischer", "García", "Hughes", "Ivanova",
              "Jensen", "Kowalski", "Lindqvist", "Moreau", "Novak", "O'Brien", "Petrov", "Rossi", "Schmidt",
              "Tanaka", "van Dijk", "Weber", "Müller"]
# country, currency, cities with a postcode pattern, VAT rate
COUNTRIES = [
    ("DE", "EUR", ["Berlin", "Hamburg", "München", "Köln"], "#####", 0.19),
    ("FR", "EUR", ["Paris", "Lyon", "Marseille", "Nantes"], "#####", 0.20),
    ("NL", "EUR", ["Amsterdam", "Utrecht", "Rotterdam"], "#### ??", 0.21),
    ("GB", "GBP", ["London", "Leeds", "Bristol", "Glasgow"], "?## #??", 0.20),
    ("US", "USD", ["Portland", "Austin", "Chicago", "Boston"], "#####", 0.0),
]
STREETS = ["Hauptstraße", "Rue de la Paix", "Keizersgracht", "High Street", "Main St", "Elm Avenue",
           "Bahnhofstraße", "Canal Road", "Market Square", "Oak Lane"]
PRODUCTS = [  # sku, name, price in EUR
    ("sku-1001-bk", "Ceramic pour-over dripper, black", 24.0),
    ("sku-1002-wh", "Ceramic pour-over dripper, white", 24.0),
    ("sku-1010", "Paper filters (100)", 6.5),
    ("sku-1020", "Gooseneck kettle 1 l", 59.0),
    ("sku-1030", "Burr grinder", 139.0),
    ("sku-1040-250", "Single-origin beans, Ethiopia, 250 g", 13.9),
    ("sku-1041-250", "Single-origin beans, Colombia, 250 g", 12.5),
    ("sku-1042-1k", "House espresso blend, 1 kg", 32.0),
    ("sku-1050", "Digital scale 0.1 g", 29.0),
    ("sku-1060-s", "Glass server 400 ml", 19.5),
    ("sku-1061-l", "Glass server 800 ml", 23.5),
    ("sku-1070", "Travel mug, insulated", 27.0),
    ("sku-1080", "Descaling tablets (12)", 8.9),
    ("sku-1090", "Milk frother", 44.0),
]
FX = {"EUR": 1.0, "GBP": 0.86, "USD": 1.08}
CARRIERS = {"DE": ["DHL", "Hermes"], "FR": ["Colissimo", "Chronopost"], "NL": ["PostNL", "DHL"],
            "GB": ["Royal Mail", "DPD"], "US": ["UPS", "USPS"]}
PAYMENT_METHODS = ["card", "card", "card", "paypal", "sepa_debit", "apple_pay"]
DECLINE_REASONS = ["insufficient_funds", "card_declined", "expired_card", "authentication_required",
                   "processing_error"]
CANCEL_REASONS = ["customer_request", "payment_failed", "out_of_stock", "fraud_suspected"]
WAREHOUSES = ["ber-1", "ams-1", "pdx-1"]
STOCK_REASONS = ["restock", "restock", "cycle_count", "damaged", "returned"]


class Shop:
    """A small simulation: customers sign up, order, pay, get shipments; stock moves; a few accounts close."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.queue: list[tuple[datetime, int, dict]] = []
        self.seq = 0
        self.customers: dict[str, dict] = {}
        self.active: list[str] = []
        self.deleted = 0
        self.next_customer = 1000
        self.next_order = 1000
        self.stock = {sku: rng.randint(40, 400) for sku, _, _ in PRODUCTS}
        self.busy_until: dict[str, datetime] = {}  # a customer's last scheduled order event

    def schedule(self, at: datetime, event: dict) -> None:
        self.busy_until[event["key"]] = max(at, self.busy_until.get(event["key"], at))
        heapq.heappush(self.queue, (at, self.seq, event))
        self.seq += 1

    def events(self, count: int) -> list[dict]:
        out: list[dict] = []
        now = START
        while len(out) < count:
            # The shop's own activity arrives every 2-20 minutes; follow-ups are queued in between.
            now += timedelta(seconds=self.rng.randint(120, 1200))
            while self.queue and self.queue[0][0] <= now and len(out) < count:
                out.append(heapq.heappop(self.queue)[2])
            if len(out) < count:
                out.extend(self.act(now)[: count - len(out)])
        return out

    def act(self, now: datetime) -> list[dict]:
        r = self.rng.random()
        if r < 0.12 or len(self.active) < 20:
            return [self.signup(now)]
        if r < 0.15:
            return [self.address_change()]
        if r < 0.17 and self.deleted < 6 and len(self.active) > 40:
            return [self.delete_account(now)]
        if r < 0.27:
            return [self.adjust_stock(self.rng.choice(PRODUCTS)[0], self.rng.choice(STOCK_REASONS))]
        return [self.place_order(now)]

    def address(self, name: str, country: tuple) -> dict:
        code, _, cities, pattern, _ = country
        postcode = "".join(
            str(self.rng.randint(0, 9)) if c == "#" else self.rng.choice("ABDEHJLNPRSTWXY") if c == "?" else c
            for c in pattern
        )
        return {"name": name, "line1": f"{self.rng.choice(STREETS)} {self.rng.randint(1, 180)}",
                "city": self.rng.choice(cities), "postcode": postcode, "country": code}

    def signup(self, now: datetime) -> dict:
        cid = f"cust-{self.next_customer}"
        self.next_customer += 1
        country = self.rng.choices(COUNTRIES, weights=[30, 20, 12, 18, 20])[0]
        first, last = self.rng.choice(FIRST_NAMES), self.rng.choice(LAST_NAMES)
        name = f"{first} {last}"
        email = f"{first}.{last}".lower().replace(" ", "").replace("'", "") + f"{self.rng.randint(1, 99)}@example.com"
        customer = {"name": name, "email": email, "country": country, "address": self.address(name, country)}
        self.customers[cid] = customer
        self.active.append(cid)
        return {"type": "user.signup", "key": cid, "subject": f"user/{cid}", "source": "accounts",
                "data": {"customer_id": cid, "name": name, "email": email, "country": country[0],
                         "locale": {"DE": "de-DE", "FR": "fr-FR", "NL": "nl-NL", "GB": "en-GB",
                                    "US": "en-US"}[country[0]],
                         "marketing_opt_in": self.rng.random() < 0.4,
                         "signed_up_at": now.strftime("%Y-%m-%dT%H:%M:%SZ")}}

    def address_change(self) -> dict:
        cid = self.rng.choice(self.active)
        c = self.customers[cid]
        c["address"] = self.address(c["name"], c["country"])
        return {"type": "user.address_changed", "key": cid, "subject": f"user/{cid}", "source": "accounts",
                "data": {"customer_id": cid, "shipping_address": c["address"]}}

    def delete_account(self, now: datetime) -> dict:
        # Someone who has been around for a while and has no order in flight.
        idle = [c for c in self.active[:-10] if self.busy_until.get(c, now) <= now]
        cid = self.rng.choice(idle or self.active[:-10])
        self.active.remove(cid)
        self.deleted += 1
        # A tombstone: key compaction drops every earlier event of this key (the customer's personal data).
        return {"type": "user.deleted", "key": cid, "subject": f"user/{cid}", "source": "accounts", "data": None}

    def adjust_stock(self, sku: str, reason: str) -> dict:
        delta = {"restock": self.rng.choice([24, 48, 96, 120]), "cycle_count": self.rng.randint(-3, 3) or 1,
                 "damaged": -self.rng.randint(1, 4), "returned": self.rng.randint(1, 2)}[reason]
        self.stock[sku] = max(0, self.stock[sku] + delta)
        return {"type": "inventory.adjusted", "key": sku, "subject": f"product/{sku}", "source": "warehouse",
                "data": {"sku": sku, "delta": delta, "reason": reason, "on_hand": self.stock[sku],
                         "location": self.rng.choice(WAREHOUSES)}}

    def place_order(self, now: datetime) -> dict:
        rng = self.rng
        cid = rng.choice(self.active)
        c = self.customers[cid]
        code, currency, _, _, vat = c["country"]
        order_id = self.next_order
        self.next_order += 1
        lines = []
        for sku, name, price in rng.sample(PRODUCTS, k=rng.choices([1, 2, 3, 4], weights=[45, 30, 17, 8])[0]):
            lines.append({"sku": sku, "name": name, "qty": rng.choices([1, 2, 3], weights=[75, 20, 5])[0],
                          "unit_price": round(price * FX[currency], 2)})
        subtotal = round(sum(li["qty"] * li["unit_price"] for li in lines), 2)
        shipping = 0.0 if subtotal >= 50 else round(4.9 * FX[currency], 2)
        tax = round((subtotal + shipping) * vat / (1 + vat), 2)
        total = round(subtotal + shipping, 2)
        subject = f"order/{order_id}"
        channel = rng.choices(["shop-web", "shop-ios", "shop-android"], weights=[60, 25, 15])[0]
        created = {"type": "order.created", "key": cid, "subject": subject, "source": channel,
                   "data": {"order_id": order_id, "customer_id": cid, "items": lines, "subtotal": subtotal,
                            "shipping": shipping, "tax": tax, "total": total, "currency": currency,
                            "shipping_address": c["address"], "placed_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                            "coupon": rng.choice([None, None, None, None, "WELCOME10", "BLACKFRIDAY"])}}
        self.follow_ups(now, cid, order_id, lines, total, currency, code)
        return created

    def follow_ups(self, now: datetime, cid: str, order_id: int, lines: list[dict], total: float,
                   currency: str, country: str) -> None:
        rng = self.rng
        subject = f"order/{order_id}"
        at = now + timedelta(seconds=rng.randint(5, 90))
        method = rng.choice(PAYMENT_METHODS)
        if rng.random() < 0.09:
            reason = rng.choice(DECLINE_REASONS)
            self.schedule(at, {"type": "payment.failed", "key": cid, "subject": subject, "source": "billing",
                               "data": {"order_id": order_id, "amount": total, "currency": currency,
                                        "method": method, "reason": reason, "attempt": 1}})
            if rng.random() < 0.5:  # the customer gives up
                at += timedelta(minutes=rng.randint(30, 240))
                self.schedule(at, {"type": "order.cancelled", "key": cid, "subject": subject,
                                   "source": "shop-web",
                                   "data": {"order_id": order_id, "reason": "payment_failed", "refund": None}})
                return
            at += timedelta(minutes=rng.randint(2, 20))
        payment_id = f"pay_{rng.getrandbits(48):012x}"
        self.schedule(at, {"type": "order.paid", "key": cid, "subject": subject, "source": "billing",
                           "data": {"order_id": order_id, "payment_id": payment_id, "amount": total,
                                    "currency": currency, "method": method}})
        at += timedelta(hours=rng.randint(2, 30), minutes=rng.randint(0, 59))
        if rng.random() < 0.06:
            self.schedule(at, {"type": "order.cancelled", "key": cid, "subject": subject, "source": "shop-web",
                               "data": {"order_id": order_id,
                                        "reason": rng.choice([r for r in CANCEL_REASONS if r != "payment_failed"]),
                                        "refund": {"payment_id": payment_id, "amount": total,
                                                   "currency": currency}}})
            return
        carrier = rng.choice(CARRIERS[country])
        warehouse = "pdx-1" if country == "US" else rng.choice(["ber-1", "ams-1"])
        self.schedule(at, {"type": "order.shipped", "key": cid, "subject": subject, "source": "warehouse",
                           "data": {"order_id": order_id, "carrier": carrier,
                                    "tracking": f"{carrier[:2].upper()}{rng.randint(10**9, 10**10 - 1)}",
                                    "warehouse": warehouse,
                                    "items": [{"sku": li["sku"], "qty": li["qty"]} for li in lines],
                                    "parcel": {"weight_g": rng.randint(300, 4500), "packages": 1}}})
        for li in lines:
            self.stock[li["sku"]] = max(0, self.stock[li["sku"]] - li["qty"])
        at += timedelta(days=rng.randint(1, 4), hours=rng.randint(0, 8))
        self.schedule(at, {"type": "order.delivered", "key": cid, "subject": subject, "source": "warehouse",
                           "data": {"order_id": order_id, "carrier": carrier, "signed_by": None}})


def cloudevents(rng: random.Random) -> list[dict]:
    """Five CloudEvents 1.0 objects from a partner system (their time and ids are the producer's)."""
    at = datetime(2026, 11, 27, 9, 15, 0, tzinfo=UTC)
    specs = [
        ("order.created", "cust-2001", "order/9001",
         {"order_id": 9001, "customer_id": "cust-2001", "currency": "EUR", "total": 48.4,
          "items": [{"sku": "sku-1040-250", "name": "Single-origin beans, Ethiopia, 250 g", "qty": 2,
                     "unit_price": 13.9}, {"sku": "sku-1060-s", "name": "Glass server 400 ml", "qty": 1,
                                           "unit_price": 20.6}]}),
        ("order.paid", "cust-2001", "order/9001",
         {"order_id": 9001, "payment_id": "pay_5f1c0ffee001", "amount": 48.4, "currency": "EUR",
          "method": "card"}),
        ("order.shipped", "cust-2001", "order/9001",
         {"order_id": 9001, "carrier": "DHL", "tracking": "DH4410093377", "warehouse": "ber-1",
          "items": [{"sku": "sku-1040-250", "qty": 2}, {"sku": "sku-1060-s", "qty": 1}]}),
        ("inventory.adjusted", "sku-1040-250", "product/sku-1040-250",
         {"sku": "sku-1040-250", "delta": -2, "reason": "marketplace_sale", "on_hand": 131, "location": "ber-1"}),
        ("payment.failed", "cust-2002", "order/9002",
         {"order_id": 9002, "amount": 139.0, "currency": "EUR", "method": "card", "reason": "expired_card",
          "attempt": 1}),
    ]
    out = []
    for i, (type_, key, subject, data) in enumerate(specs):
        out.append({
            "specversion": "1.0",
            "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "source": "https://marketplace.example.com/partners/brewhaus",
            "type": type_,
            "subject": subject,
            "time": (at + timedelta(seconds=37 * i)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "datacontenttype": "application/json",
            "partitionkey": key,
            "data": data,
        })
    return out


def write_jsonl(path: Path, objects: list[dict]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for obj in objects:
            f.write(json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n")


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else Path(__file__).resolve().parent
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(SEED)
    events = Shop(rng).events(EVENT_COUNT)
    write_jsonl(out / "events.jsonl", events)
    write_jsonl(out / "cloudevents.jsonl", cloudevents(random.Random(SEED + 1)))
    print(f"wrote {len(events)} events to {out / 'events.jsonl'} and 5 to {out / 'cloudevents.jsonl'}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
