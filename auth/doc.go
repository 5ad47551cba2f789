// Package auth is who may connect to the broker and what they may do:
// users with salted SCRAM-SHA-256 credentials, bearer tokens (the admin
// token and JWTs from a trusted issuer), client certificates, roles, tenants
// and ACL rules. It holds no connection state: the server asks it once per
// handshake who a client is (Authenticator) and once per connection and
// resource what that principal may do (Store.Authorize), and caches the
// answer until the rules change (Store.Gen).
//
// Everything it keeps on disk is in one file, DataDir/security.json, owner
// readable only, rewritten whole and atomically on every change: users (with
// salted keys, never passwords), tenants and rules.
package auth
