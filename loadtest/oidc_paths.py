"""`peak bench`'s OpenID Connect paths (issue 19): the single sign-on hop and the code exchange.

``sso_hop`` is ``GET /sso/authorize`` with a live session cookie, one line per seeded shopper: answered with a
302 to the client's redirect URI carrying a fresh code. ``code_exchange`` is ``POST /sso/token`` with
``grant_type=authorization_code``: a code is good once, so its lines are codes prepared just before the
measurement by a wrk run of the hop twice as long as the measurement, which is also its warm-up (the path has no
other: a warm-up would spend codes the measured run then sends again), and the measured run is only the
exchange. loadtest/wrk/requests.lua writes the codes of the hop's redirects to a file. With ES256 ID tokens the
exchange answers more than half the hop's rate (1,242 and 2,007 rps in one CI run, 1 API process, 8
connections), and a minting run as long as the measurement once fell 64 codes short: wrk sent those again and
their 400 `invalid_grant` showed in the table's `unexpected`, failing the bench. The bench's stack keeps codes
600 s (PEAK_SSO_CODE_TTL_S), so a code minted first is still good at the end of a measurement up to 190 s long
(`peak bench --duration` takes at most 180). One PKCE verifier serves every code. ``code_exchange`` is the
seeded client's, registered with ES256 ID tokens; ``code_exchange_rs256`` the same for a second client left at
the default, RS256 ID tokens (the access token is PEAK_SSO_ALGORITHM's in both).
"""

from __future__ import annotations

import base64
import hashlib
import tempfile
from pathlib import Path
from urllib.parse import quote, urlencode

from kit.commands import CommandError
from loadtest.wrk_runner import Line, run_wrk, write_lines

__all__ = ["CHALLENGE", "REDIRECT_URI", "VERIFIER", "exchange_lines", "hop_lines"]

REDIRECT_URI = "http://127.0.0.1:9/bench/callback"
VERIFIER = "peak-bench-pkce-verifier-" + "0123456789abcdef" * 2  # 57 unreserved characters (RFC 7636: 43-128)
MINT_RUNS = 2  # the hop runs this many times as long as the measured exchange, for codes enough to last it
CHALLENGE = base64.urlsafe_b64encode(hashlib.sha256(VERIFIER.encode()).digest()).rstrip(b"=").decode()


def hop_lines(client_id: str, cookies: list[str]) -> list[Line]:
    if not client_id or not any(cookies):
        raise CommandError("the bench seeded no OpenID Connect client or no session cookies")
    return [
        ("GET", "/sso/authorize?" + urlencode({
            "response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT_URI, "scope": "openid",
            "state": f"s{i}", "nonce": f"n{i}", "code_challenge": CHALLENGE, "code_challenge_method": "S256",
        }), {"Cookie": f"peak_sid={cookie}"}, "")
        for i, cookie in enumerate(cookies)
    ]  # fmt: skip


def exchange_lines(
    base_url: str, client_id: str, client_secret: str, cookies: list[str], *, run_s: float, connections: int
) -> list[Line]:
    """One token request per fresh code, the codes made by the hop in twice ``run_s`` (the measured run's length)."""
    with tempfile.TemporaryDirectory(prefix="peak-bench-codes-") as tmp:
        folder = Path(tmp)
        codes_file = folder / "codes"
        hops = write_lines(hop_lines(client_id, cookies), folder, "sso_hop")
        run_wrk(base_url, hops, duration_s=MINT_RUNS * run_s, connections=connections, codes_file=codes_file)
        codes = list(dict.fromkeys(codes_file.read_text().split())) if codes_file.exists() else []
    if not codes:
        raise CommandError("GET /sso/authorize with the seeded sessions gave no codes")
    basic = base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
    headers = {"Authorization": f"Basic {basic}", "Content-Type": "application/x-www-form-urlencoded"}
    tail = f"&redirect_uri={quote(REDIRECT_URI, safe='')}&code_verifier={VERIFIER}"
    # The code as the redirect carried it: already URL-encoded, as a form value must be.
    return [
        ("POST", "/sso/token", headers, f"grant_type=authorization_code&code={code}{tail}") for code in codes
    ]
