"""The member portal (`/portal`): a member's card, check-in, tasks, badges, the mall, history,
leaderboards and red envelopes, on a phone first.

Reached with a member token: `links.portal_link` (printed by `kinloop demo` and `kinloop
member link`) opens `/portal/enter?token=...`, which keeps the token in a cookie (`access`);
`pages` holds the pages and the changes a member makes; what they show comes from
`services.portal`.
"""

from __future__ import annotations

from kinloop.web.portal.pages import router

__all__ = ["router"]
