package engine

import (
	"fmt"
	"time"

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

// tenantQuotas is a tenant's quotas; none for an unknown tenant.
func (e *Engine) tenantQuotas(tenant string) auth.Quotas {
	t, _ := e.security.Tenant(tenant)
	return t.Quotas
}

// storageInterval is how often the bytes each tenant stores are measured
// for its storage quota; between measurements the broker adds what it
// publishes.
const storageInterval = time.Second

// startQuotaLoop measures the tenants' storage every storageInterval.
func (e *Engine) startQuotaLoop() {
	e.quotaStop, e.quotaDone = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(e.quotaDone)
		t := time.NewTicker(storageInterval)
		defer t.Stop()
		for {
			e.measureTenants()
			select {
			case <-t.C:
			case <-e.quotaStop:
				return
			}
		}
	}()
}

// measureTenants hands the network side each tenant's stored bytes.
func (e *Engine) measureTenants() {
	tenants := e.security.Tenants()
	if len(tenants) == 0 {
		return
	}
	sums := e.topics.tenantStorage()
	for _, t := range tenants {
		e.srv.SetTenantStorage(t.Name, sums[t.Name])
	}
}

func (e *Engine) stopQuotaLoop() {
	if e.quotaStop != nil {
		close(e.quotaStop)
		<-e.quotaDone
		e.quotaStop = nil
	}
}
