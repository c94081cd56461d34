-- OpenID Connect clients (issue 19). A client with no redirect URI is an introspection client only, as
-- before. Redirect URIs are matched by string equality; a public client has no secret ('' here) and must use
-- PKCE; allow_no_pkce lets a confidential client redeem a code without it.
ALTER TABLE sso_clients
    ADD COLUMN redirect_uris text[] NOT NULL DEFAULT '{}',
    ADD COLUMN post_logout_redirect_uris text[] NOT NULL DEFAULT '{}',
    ADD COLUMN backchannel_logout_uri text,
    ADD COLUMN public boolean NOT NULL DEFAULT false,
    ADD COLUMN allow_no_pkce boolean NOT NULL DEFAULT false;
