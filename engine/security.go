package engine

import (
	"fmt"

	"github.com/ratatoskr-mq/ratatoskr/auth"
)

// newAuth opens the users, tenants and rules (DataDir/security.json) and
// builds who checks credentials: the store's users, the admin token and,
// when configured, a JWT issuer's key. The store is open whether or not
// Config.Auth is on, so that users and rules can be set up before
// authentication is turned on.
func (e *Engine) newAuth() error {
	st, err := auth.Open(e.cfg.FS, e.cfg.DataDir)
	if err != nil {
		return fmt.Errorf("engine: %w", err)
	}
	e.security = st
	e.authn = &auth.Authenticator{Store: st, AdminToken: func() string { return e.http.Token() }}
	if e.cfg.JWTKeyFile != "" {
		v, err := auth.NewJWTVerifier(e.cfg.JWTIssuer, e.cfg.JWTKeyFile)
		if err != nil {
			return fmt.Errorf("engine: %w", err)
		}
		v.Audience = e.cfg.JWTAudience
		e.authn.JWT = v
	}
	e.authFailures = auth.NewFailLimiter(e.cfg.AuthFailureBurst, e.cfg.AuthFailureInterval)
	return nil
}

// netAuth is the authenticator the native protocol uses: nil with
// authentication off.
func (e *Engine) netAuth() *auth.Authenticator {
	if !e.cfg.Auth {
		return nil
	}
	return e.authn
}

// Security is the broker's users, tenants and ACL rules.
func (e *Engine) Security() *auth.Store { return e.security }
