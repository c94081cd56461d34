-- The algorithm an OpenID Connect client's ID tokens and back-channel logout tokens are signed with
-- (OpenID Connect Registration 1.0, id_token_signed_response_alg): RS256 unless registered otherwise, as
-- the specification defaults it. Access tokens keep PEAK_SSO_ALGORITHM.
ALTER TABLE sso_clients
    ADD COLUMN id_token_signed_response_alg text NOT NULL DEFAULT 'RS256'
        CHECK (id_token_signed_response_alg IN ('RS256', 'ES256', 'EdDSA'));
