#!/usr/bin/env python3
"""Seeds an embedded SQLite database as bench/seed.sql seeds PostgreSQL: USERS users with the
same 20 settings each, in the default scope. The service must have created the tables (it
migrates at start-up). Usage: seed_sqlite.py DB_FILE USERS WIDTH"""

import json
import sqlite3
import sys
import uuid
from datetime import datetime, timedelta, timezone


def stamp(at: datetime) -> str:
    # As the service stores a timestamp: RFC 3339 with milliseconds and +00:00.
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}+00:00"


def values(n: int) -> list:
    pick = lambda options, i: options[i % len(options)]
    return [
        ("theme", pick(["dark", "light", "system"], n)),
        ("locale", pick(["en", "de", "tr", "pt-BR", "fr"], n)),
        ("preferredLanguage", pick(["en", "de", "tr", "pt-BR", "fr"], n)),
        ("digestMode", pick(["DAILY", "WEEKLY", "NONE"], n)),
        ("notifications", n % 10 != 0),
        ("emailNotifications", n % 2 == 0),
        ("pushNotifications", n % 3 != 0),
        ("inAppNotifications", True),
        ("followNotifications", n % 4 != 0),
        ("messageNotifications", n % 5 != 0),
        ("appearance", {"mode": pick(["dark", "light", "system"], n),
                        "accent": pick(["#3b82f6", "#ef4444", "#10b981", "#f59e0b"], n),
                        "fontScale": round(1.0 + (n % 5) * 0.1, 1),
                        "density": pick(["comfortable", "compact"], n)}),
        ("notificationPrefs", {
            "email": {"enabled": n % 2 == 0, "digest": "daily", "categories": ["billing", "security"]},
            "push": {"enabled": n % 3 != 0, "quietHours": {"start": "22:00", "end": "07:00"}},
            "inApp": {"enabled": True, "sound": n % 2 == 1}}),
        ("editor", {"tabSize": 2 + 2 * (n % 2), "wordWrap": n % 3 == 0,
                    "fontFamily": "JetBrains Mono", "lineNumbers": True}),
        ("recentSearches", [f"invoice {n % 100}", "team settings", f"user-{(n * 7) % 1000}"]),
        ("pinnedProjects", [n % 50, (n * 3) % 50, (n * 7) % 50]),
        ("timezone", pick(["Europe/Berlin", "Europe/Istanbul", "America/Sao_Paulo", "UTC"], n)),
        ("dateFormat", pick(["YYYY-MM-DD", "DD.MM.YYYY", "MM/DD/YYYY"], n)),
        ("dashboardLayout", [{"widget": "activity", "w": 2, "h": 1},
                             {"widget": "balance", "w": 1, "h": 1},
                             {"widget": "followers", "w": 1, "h": 2}]),
        ("privacy", {"profileVisible": n % 7 != 0, "showEmail": False, "searchable": True}),
        ("onboardingCompleted", n % 11 != 0),
    ]


def main() -> None:
    path, users, width = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    now = datetime.now(timezone.utc)
    db = sqlite3.connect(path, timeout=30)
    db.execute("PRAGMA busy_timeout = 30000")
    with db:
        for n in range(1, users + 1):
            uid = f"user-{n:0{width}d}"
            db.execute(
                "INSERT INTO users (id, email, roles, locale, settings_id, created_at, updated_at) "
                "VALUES (?, ?, '[]', ?, ?, ?, ?)",
                (uid, f"{uid}@example.com", ["en", "de", "tr", "pt-BR", "fr"][n % 5],
                 uuid.uuid4().bytes, stamp(now - timedelta(days=90) + timedelta(minutes=n % 1000)),
                 stamp(now - timedelta(days=n % 90))))
            db.executemany(
                "INSERT INTO settings (user_id, scope, key, value, version, created_at, updated_at) "
                "VALUES (?, '', ?, ?, ?, ?, ?)",
                [(uid, key, json.dumps(value, separators=(",", ":")), 1 + (n + ord_) % 7,
                  stamp(now - timedelta(days=60)), stamp(now - timedelta(days=(n + ord_) % 60)))
                 for ord_, (key, value) in enumerate(values(n), start=1)])
    db.execute("ANALYZE")
    db.close()


if __name__ == "__main__":
    main()
