"""`peak drill`: fault scenarios against a private stack, each invariant printed PASS or FAIL with its figures."""
