-- Accounts. Usernames are unique whatever their case; every user is a shopper, other roles are granted.
CREATE TABLE sso_users (
    id uuid PRIMARY KEY,
    username text NOT NULL,
    password_hash text NOT NULL,
    roles text[] NOT NULL DEFAULT ARRAY['shopper'],
    disabled_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    password_changed_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX sso_users_username_key ON sso_users (lower(username));

-- Signing keys. The private key is PKCS#8 encrypted with PEAK_SECRET_KEY; the public key stays published
-- until published_until, which a rotation sets to when the last token it signed expires.
CREATE TABLE sso_signing_keys (
    kid text PRIMARY KEY,
    algorithm text NOT NULL,
    public_jwk jsonb NOT NULL,
    private_key bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    published_until timestamptz
);

-- Subsystems allowed to introspect tokens; the secret is random, so a SHA-256 digest is a safe store.
CREATE TABLE sso_clients (
    name text PRIMARY KEY,
    secret_sha256 text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
