package httpapi

import (
	"errors"
	"net/http"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/auth"
	"github.com/ratatoskr-mq/ratatoskr/telemetry"
)

// The security API: users, ACL rules and tenants (docs/ADMIN.md,
// "Security"). A broker admin manages everything; a tenant admin manages
// the users and rules of its own tenant, sees its tenant, and nothing
// else. Every change is persisted before it answers, applies to open
// connections at once, and is audited (EventSecurityChanged).

func (s *Server) registerSecurity(mux *http.ServeMux, authz func(http.HandlerFunc) http.Handler) {
	handleRoutes(mux, []route{
		{"GET /api/v1/users", s.apiListUsers},
		{"POST /api/v1/users", s.apiAddUser},
		{"GET /api/v1/users/{name}", s.apiGetUser},
		{"PATCH /api/v1/users/{name}", s.apiUpdateUser},
		{"DELETE /api/v1/users/{name}", s.apiDeleteUser},
		{"GET /api/v1/acls", s.apiListRules},
		{"POST /api/v1/acls", s.apiAddRule},
		{"DELETE /api/v1/acls/{id}", s.apiDeleteRule},
		{"GET /api/v1/tenants", s.apiListTenants},
		{"POST /api/v1/tenants", s.apiAddTenant},
		{"GET /api/v1/tenants/{name}", s.apiGetTenant},
		{"PATCH /api/v1/tenants/{name}", s.apiUpdateTenant},
		{"DELETE /api/v1/tenants/{name}", s.apiDeleteTenant},
	}, func(h http.HandlerFunc) http.Handler { return authz(s.withStore(h)) })
}

// withStore answers 503 on a broker built without a store (tests of the
// HTTP side alone).
func (s *Server) withStore(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.Auth == nil || s.cfg.Auth.Store == nil {
			writeError(w, http.StatusServiceUnavailable, "no_security_store", "this broker keeps no users")
			return
		}
		h(w, r)
	}
}

func (s *Server) store() *auth.Store { return s.cfg.Auth.Store }

// scope is the tenant a request acts in and whether it may act in all:
// a broker admin acts in every tenant (narrowed by ?tenant= on lists), a
// tenant admin in its own.
func scope(r *http.Request) (tenant string, all bool) {
	p := principalOf(r)
	if p.Role == auth.RoleAdmin {
		if t := r.URL.Query().Get("tenant"); t != "" {
			return t, false
		}
		return "", true
	}
	return p.Tenant, false
}

// securityErr answers a store error with the status that fits it.
func securityErr(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, auth.ErrUnknownUser), errors.Is(err, auth.ErrUnknownRule), errors.Is(err, auth.ErrUnknownTenant):
		writeError(w, http.StatusNotFound, "not_found", err.Error())
	case errors.Is(err, auth.ErrUserExists), errors.Is(err, auth.ErrTenantExists), errors.Is(err, auth.ErrTenantInUse):
		writeError(w, http.StatusConflict, "conflict", err.Error())
	case errors.Is(err, auth.ErrForbidden):
		writeError(w, http.StatusForbidden, "forbidden", err.Error())
	case errors.Is(err, auth.ErrPersist):
		writeError(w, http.StatusInternalServerError, "storage_error", err.Error())
	default:
		writeError(w, http.StatusBadRequest, "invalid_argument", err.Error())
	}
}

// changed audits a security change.
func (s *Server) changed(r *http.Request, action, target string, err error) {
	p := principalOf(r)
	s.b.Emit(telemetry.Event{Time: time.Now(), Kind: telemetry.EventSecurityChanged, Partition: -1,
		Actor: adminOrigin(r).Actor, Remote: r.RemoteAddr, Principal: p.User, Tenant: p.Tenant,
		Action: action, Target: target, Err: err})
}

// userInScope finds a user the request may see.
func (s *Server) userInScope(r *http.Request, name string) (auth.UserView, error) {
	u, ok := s.store().User(name)
	tenant, all := scope(r)
	if !ok || (!all && principalOf(r).Role != auth.RoleAdmin && u.Tenant != tenant) {
		return auth.UserView{}, auth.ErrUnknownUser // a tenant admin does not learn of other tenants' users
	}
	return u, nil
}

func (s *Server) apiListUsers(w http.ResponseWriter, r *http.Request) {
	tenant, all := scope(r)
	users := s.store().Users(tenant, all)
	if users == nil {
		users = []auth.UserView{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"users": users})
}

func (s *Server) apiGetUser(w http.ResponseWriter, r *http.Request) {
	u, err := s.userInScope(r, r.PathValue("name"))
	if err != nil {
		securityErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, u)
}

type addUserRequest struct {
	Name     string `json:"name"`
	Password string `json:"password"`
	Tenant   string `json:"tenant"`
	Role     string `json:"role"`
}

func (s *Server) apiAddUser(w http.ResponseWriter, r *http.Request) {
	var req addUserRequest
	if err := decodeBody(w, r, &req); err != nil {
		s.changed(r, "user.add", "users", err)
		return
	}
	err := s.addUser(r, req)
	s.changed(r, "user.add", "user/"+req.Name, err)
	if err != nil {
		securityErr(w, err)
		return
	}
	u, _ := s.store().User(req.Name)
	writeJSON(w, http.StatusCreated, u)
}

func (s *Server) addUser(r *http.Request, req addUserRequest) error {
	role, err := auth.ParseRole(req.Role)
	if err != nil {
		return err
	}
	p := principalOf(r)
	if p.Role != auth.RoleAdmin {
		if req.Tenant != "" && req.Tenant != p.Tenant {
			return auth.ErrForbidden
		}
		if role == auth.RoleAdmin {
			return auth.ErrForbidden
		}
		req.Tenant = p.Tenant
	}
	return s.store().AddUser(req.Name, req.Tenant, role, req.Password)
}

type updateUserRequest struct {
	Password *string `json:"password"`
	Disabled *bool   `json:"disabled"`
}

func (s *Server) apiUpdateUser(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var req updateUserRequest
	if err := decodeBody(w, r, &req); err != nil {
		s.changed(r, "user.update", "user/"+name, err)
		return
	}
	_, err := s.userInScope(r, name)
	if err == nil && req.Password == nil && req.Disabled == nil {
		err = errors.New(`nothing to change: give "password" or "disabled"`)
	}
	action := "user.update"
	if err == nil && req.Password != nil {
		action = "user.passwd"
		err = s.store().SetPassword(name, *req.Password)
	}
	if err == nil && req.Disabled != nil {
		action = map[bool]string{true: "user.disable", false: "user.enable"}[*req.Disabled]
		err = s.store().SetDisabled(name, *req.Disabled)
	}
	s.changed(r, action, "user/"+name, err)
	if err != nil {
		securityErr(w, err)
		return
	}
	u, _ := s.store().User(name)
	writeJSON(w, http.StatusOK, u)
}

func (s *Server) apiDeleteUser(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	_, err := s.userInScope(r, name)
	if err == nil {
		err = s.store().DeleteUser(name)
	}
	s.changed(r, "user.delete", "user/"+name, err)
	if err != nil {
		securityErr(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) apiListRules(w http.ResponseWriter, r *http.Request) {
	tenant, all := scope(r)
	rules := s.store().Rules(tenant, all)
	if rules == nil {
		rules = []auth.Rule{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"rules": rules})
}

type addRuleRequest struct {
	Tenant    string        `json:"tenant"`
	Principal string        `json:"principal"`
	Resource  auth.Resource `json:"resource"`
	Name      string        `json:"name"`
	Pattern   auth.Pattern  `json:"pattern"`
	Ops       auth.Op       `json:"ops"`
	Deny      bool          `json:"deny"`
}

func (s *Server) apiAddRule(w http.ResponseWriter, r *http.Request) {
	var req addRuleRequest
	if err := decodeBody(w, r, &req); err != nil {
		s.changed(r, "acl.add", "acls", err)
		return
	}
	p := principalOf(r)
	rule := auth.Rule{Tenant: req.Tenant, Principal: req.Principal, Resource: req.Resource, Name: req.Name,
		Pattern: req.Pattern, Ops: req.Ops, Deny: req.Deny}
	var err error
	if p.Role != auth.RoleAdmin {
		if req.Tenant != "" && req.Tenant != p.Tenant {
			err = auth.ErrForbidden
		}
		if req.Resource == auth.ResCluster {
			err = auth.ErrForbidden
		}
		rule.Tenant = p.Tenant
	}
	if err == nil {
		rule, err = s.store().AddRule(rule)
	}
	s.changed(r, "acl.add", "acl/"+rule.String(), err)
	if err != nil {
		securityErr(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, rule)
}

func (s *Server) apiDeleteRule(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	tenant, all := scope(r)
	if principalOf(r).Role == auth.RoleAdmin {
		all = true
	}
	err := s.store().DeleteRule(tenant, all, id)
	s.changed(r, "acl.delete", "acl/"+id, err)
	if err != nil {
		securityErr(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) apiListTenants(w http.ResponseWriter, r *http.Request) {
	ts := s.store().Tenants()
	if p := principalOf(r); p.Role != auth.RoleAdmin {
		own, ok := s.store().Tenant(p.Tenant)
		ts = []auth.Tenant{}
		if ok {
			ts = append(ts, own)
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"tenants": ts})
}

func (s *Server) apiGetTenant(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	t, ok := s.store().Tenant(name)
	if p := principalOf(r); !ok || (p.Role != auth.RoleAdmin && p.Tenant != name) {
		securityErr(w, auth.ErrUnknownTenant)
		return
	}
	writeJSON(w, http.StatusOK, t)
}

type tenantRequest struct {
	Name   string      `json:"name"`
	Quotas auth.Quotas `json:"quotas"`
}

// adminOnlyErr refuses a tenant admin what only broker admins do.
func adminOnlyErr(r *http.Request) error {
	if principalOf(r).Role != auth.RoleAdmin {
		return auth.ErrForbidden
	}
	return nil
}

func (s *Server) apiAddTenant(w http.ResponseWriter, r *http.Request) {
	var req tenantRequest
	if err := decodeBody(w, r, &req); err != nil {
		s.changed(r, "tenant.add", "tenants", err)
		return
	}
	err := adminOnlyErr(r)
	if err == nil {
		err = s.store().AddTenant(req.Name, req.Quotas)
	}
	s.changed(r, "tenant.add", "tenant/"+req.Name, err)
	if err != nil {
		securityErr(w, err)
		return
	}
	t, _ := s.store().Tenant(req.Name)
	writeJSON(w, http.StatusCreated, t)
}

func (s *Server) apiUpdateTenant(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var req struct {
		Quotas auth.Quotas `json:"quotas"`
	}
	if err := decodeBody(w, r, &req); err != nil {
		s.changed(r, "tenant.quotas", "tenant/"+name, err)
		return
	}
	err := adminOnlyErr(r)
	if err == nil {
		err = s.store().SetQuotas(name, req.Quotas)
	}
	s.changed(r, "tenant.quotas", "tenant/"+name, err)
	if err != nil {
		securityErr(w, err)
		return
	}
	t, _ := s.store().Tenant(name)
	writeJSON(w, http.StatusOK, t)
}

func (s *Server) apiDeleteTenant(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	err := adminOnlyErr(r)
	if err == nil {
		err = s.store().DeleteTenant(name)
	}
	s.changed(r, "tenant.delete", "tenant/"+name, err)
	if err != nil {
		securityErr(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
