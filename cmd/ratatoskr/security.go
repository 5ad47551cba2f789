package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/auth"
)

// The user, acl and tenant commands: the broker's security API over HTTP
// (docs/ADMIN.md, "Security"). They authenticate with the admin token (from
// --admin-token, RATATOSKR_ADMIN_TOKEN, or <data>/admin.token), or as a
// user with --user and RATATOSKR_PASSWORD (a tenant admin manages its own
// tenant).

// adminFlags reach the broker's HTTP API.
type adminFlags struct {
	HTTPAddr   string   `default:"127.0.0.1:8080" env:"RATATOSKR_HTTP_ADDR" name:"http-addr" help:"The broker's HTTP address."`
	Data       string   `default:"./data" env:"RATATOSKR_DATA" help:"The broker's data directory, for its admin.token when no credentials are given."`
	AdminToken string   `env:"RATATOSKR_ADMIN_TOKEN" secret:"" help:"The broker's admin token; else --token, else --user, else <data>/admin.token."`
	User       string   `env:"RATATOSKR_USER" help:"Act as this user (HTTP Basic), with RATATOSKR_PASSWORD or --password."`
	Password   string   `env:"RATATOSKR_PASSWORD" secret:"" help:"The --user's password."`
	Token      string   `env:"RATATOSKR_TOKEN" secret:"" help:"A JWT of the issuer the broker trusts."`
	Timeout    duration `default:"10s" env:"RATATOSKR_TIMEOUT" help:"Time limit for each request."`
	JSON       bool     `name:"json" help:"Print the broker's JSON answer instead of a table."`
	tlsFlags
}

// call sends a request to the security API and decodes a 2xx answer into
// out (when not nil); any other answer is the broker's error.
func (f *adminFlags) call(ctx context.Context, method, path string, body, out any) error {
	scheme := "http"
	cfg, err := f.config()
	if err != nil {
		return err
	}
	if cfg != nil {
		scheme = "https"
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(ctx, f.Timeout.D())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, scheme+"://"+browsable(f.HTTPAddr)+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	switch { // in the order the help gives: the admin token, a token, a user, the token file
	case f.AdminToken != "":
		req.Header.Set("Authorization", "Bearer "+f.AdminToken)
	case f.Token != "":
		req.Header.Set("Authorization", "Bearer "+f.Token)
	case f.User != "":
		if f.Password == "" {
			return usageErrorf("--user needs a password: RATATOSKR_PASSWORD or --password")
		}
		req.SetBasicAuth(f.User, f.Password)
	default:
		tok, err := readTokenFile(f.Data)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	hc := &http.Client{}
	if cfg != nil {
		hc.Transport = &http.Transport{TLSClientConfig: cfg}
	}
	res, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("the broker's HTTP API at %s: %w", f.HTTPAddr, err)
	}
	defer func() { _ = res.Body.Close() }()
	data, err := io.ReadAll(io.LimitReader(res.Body, 16<<20))
	if err != nil {
		return err
	}
	if res.StatusCode/100 != 2 {
		var e struct {
			Error struct {
				Code, Message string
			} `json:"error"`
		}
		if json.Unmarshal(data, &e) == nil && e.Error.Message != "" {
			return fmt.Errorf("%s (%s)", e.Error.Message, e.Error.Code)
		}
		return fmt.Errorf("%s %s: %s", method, path, res.Status)
	}
	if f.JSON && method == http.MethodGet {
		_, err := os.Stdout.Write(data)
		return err
	}
	if out != nil && len(data) > 0 {
		return json.Unmarshal(data, out)
	}
	return nil
}

// readPassword reads a password from the first line of standard input.
func readPassword(stdin bool) (string, error) {
	if !stdin {
		return "", usageErrorf("give the password on standard input with --password-stdin (a password on the command line is visible to every user of the machine)")
	}
	line, err := bufio.NewReader(os.Stdin).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", usageErrorf("no password on standard input")
	}
	return line, nil
}

type userCmd struct {
	Add     userAddCmd     `cmd:"" help:"Create a user with a password read from standard input."`
	List    userListCmd    `cmd:"" help:"List users (a tenant admin sees its tenant's)."`
	Delete  userDeleteCmd  `cmd:"" help:"Delete a user, its rules, and close its connections."`
	Passwd  userPasswdCmd  `cmd:"" help:"Set a user's password (read from standard input); its connections are closed."`
	Disable userDisableCmd `cmd:"" help:"Disable a user and close its connections."`
	Enable  userEnableCmd  `cmd:"" help:"Enable a disabled user."`
}

type userAddCmd struct {
	Name          string `arg:"" help:"User name: letters, digits, '.', '_', '-', '@'."`
	Tenant        string `help:"The user's tenant; empty: none (the broker's own namespace)."`
	Role          string `default:"user" enum:"user,tenant-admin,admin" help:"user, tenant-admin (manages its tenant) or admin (manages the broker)."`
	PasswordStdin bool   `name:"password-stdin" help:"Read the password from the first line of standard input."`
	adminFlags
}

func (c *userAddCmd) Run(ctx context.Context) error {
	pw, err := readPassword(c.PasswordStdin)
	if err != nil {
		return err
	}
	var u auth.UserView
	if err := c.call(ctx, "POST", "/api/v1/users", map[string]string{"name": c.Name, "password": pw,
		"tenant": c.Tenant, "role": c.Role}, &u); err != nil {
		return err
	}
	fmt.Printf("user %s created (%s)\n", u.Name, describeUser(u))
	return nil
}

func describeUser(u auth.UserView) string {
	s := string(u.Role)
	if u.Tenant != "" {
		s += ", tenant " + u.Tenant
	}
	if u.Disabled {
		s += ", disabled"
	}
	return s
}

type userListCmd struct {
	Tenant string `help:"Only this tenant's users (broker admins)."`
	adminFlags
}

func (c *userListCmd) Run(ctx context.Context) error {
	var res struct {
		Users []auth.UserView `json:"users"`
	}
	if err := c.call(ctx, "GET", "/api/v1/users?tenant="+url.QueryEscape(c.Tenant), nil, &res); err != nil || c.JSON {
		return err
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	_, _ = fmt.Fprintln(w, "NAME\tTENANT\tROLE\tSTATE\tCHANGED")
	for _, u := range res.Users {
		state := "enabled"
		if u.Disabled {
			state = "disabled"
		}
		_, _ = fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", u.Name, dash(u.Tenant), u.Role, state, u.Changed.Format(time.RFC3339))
	}
	return w.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

type userDeleteCmd struct {
	Name string `arg:""`
	adminFlags
}

func (c *userDeleteCmd) Run(ctx context.Context) error {
	if err := c.call(ctx, "DELETE", "/api/v1/users/"+url.PathEscape(c.Name), nil, nil); err != nil {
		return err
	}
	fmt.Printf("user %s deleted\n", c.Name)
	return nil
}

type userPasswdCmd struct {
	Name          string `arg:""`
	PasswordStdin bool   `name:"password-stdin" help:"Read the password from the first line of standard input."`
	adminFlags
}

func (c *userPasswdCmd) Run(ctx context.Context) error {
	pw, err := readPassword(c.PasswordStdin)
	if err != nil {
		return err
	}
	if err := c.call(ctx, "PATCH", "/api/v1/users/"+url.PathEscape(c.Name), map[string]string{"password": pw}, nil); err != nil {
		return err
	}
	fmt.Printf("password of %s changed\n", c.Name)
	return nil
}

type userDisableCmd struct {
	Name string `arg:""`
	adminFlags
}

func (c *userDisableCmd) Run(ctx context.Context) error {
	if err := c.call(ctx, "PATCH", "/api/v1/users/"+url.PathEscape(c.Name), map[string]bool{"disabled": true}, nil); err != nil {
		return err
	}
	fmt.Printf("user %s disabled\n", c.Name)
	return nil
}

type userEnableCmd struct {
	Name string `arg:""`
	adminFlags
}

func (c *userEnableCmd) Run(ctx context.Context) error {
	if err := c.call(ctx, "PATCH", "/api/v1/users/"+url.PathEscape(c.Name), map[string]bool{"disabled": false}, nil); err != nil {
		return err
	}
	fmt.Printf("user %s enabled\n", c.Name)
	return nil
}

type aclCmd struct {
	Add    aclAddCmd    `cmd:"" help:"Add a rule: allow (or --deny) a principal operations on resources."`
	List   aclListCmd   `cmd:"" help:"List the rules."`
	Delete aclDeleteCmd `cmd:"" help:"Delete a rule by its ID."`
}

type aclAddCmd struct {
	Principal string `required:"" help:"A user name, or * for every user of the tenant."`
	Topic     string `help:"The topic (or, with --prefix, the topic name prefix); * for every topic."`
	Group     string `help:"The consumer group (or prefix); * for every group."`
	Cluster   bool   `help:"The broker itself (admin operations)."`
	Prefix    bool   `help:"Match names that start with the given one."`
	Ops       string `required:"" help:"Operations, comma-separated: publish, subscribe (also fetch), create, delete, alter, describe, join, admin, all."`
	Deny      bool   `help:"Deny instead of allow; a deny wins over every allow."`
	Tenant    string `help:"The tenant whose principals and resources the rule is about (broker admins); a tenant admin's rules are its tenant's."`
	adminFlags
}

func (c *aclAddCmd) Run(ctx context.Context) error {
	n := 0
	req := map[string]any{"principal": c.Principal, "ops": c.Ops, "deny": c.Deny, "tenant": c.Tenant, "pattern": "literal"}
	if c.Topic != "" {
		req["resource"], req["name"] = "topic", c.Topic
		n++
	}
	if c.Group != "" {
		req["resource"], req["name"] = "group", c.Group
		n++
	}
	if c.Cluster {
		req["resource"], req["name"] = "cluster", "*"
		n++
	}
	if n != 1 {
		return usageErrorf("name one resource: --topic, --group or --cluster")
	}
	if _, err := auth.ParseOps(c.Ops); err != nil {
		return usageErrorf("--ops: %v", err)
	}
	if c.Prefix {
		req["pattern"] = "prefix"
	}
	var r auth.Rule
	if err := c.call(ctx, "POST", "/api/v1/acls", req, &r); err != nil {
		return err
	}
	fmt.Printf("rule %s: %s\n", r.ID, r.String())
	return nil
}

type aclListCmd struct {
	Tenant string `help:"Only this tenant's rules (broker admins)."`
	adminFlags
}

func (c *aclListCmd) Run(ctx context.Context) error {
	var res struct {
		Rules []auth.Rule `json:"rules"`
	}
	if err := c.call(ctx, "GET", "/api/v1/acls?tenant="+url.QueryEscape(c.Tenant), nil, &res); err != nil || c.JSON {
		return err
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	_, _ = fmt.Fprintln(w, "ID\tTENANT\tRULE")
	for _, r := range res.Rules {
		_, _ = fmt.Fprintf(w, "%s\t%s\t%s\n", r.ID, dash(r.Tenant), r.String())
	}
	return w.Flush()
}

type aclDeleteCmd struct {
	ID string `arg:""`
	adminFlags
}

func (c *aclDeleteCmd) Run(ctx context.Context) error {
	if err := c.call(ctx, "DELETE", "/api/v1/acls/"+url.PathEscape(c.ID), nil, nil); err != nil {
		return err
	}
	fmt.Printf("rule %s deleted\n", c.ID)
	return nil
}

type tenantCmd struct {
	Add    tenantAddCmd    `cmd:"" help:"Create a tenant: an isolated namespace of topics and groups, with quotas."`
	List   tenantListCmd   `cmd:"" help:"List the tenants and their quotas."`
	Quota  tenantQuotaCmd  `cmd:"" help:"Set a tenant's quotas (every quota not given becomes 0: none)."`
	Delete tenantDeleteCmd `cmd:"" help:"Delete a tenant that has no users left."`
}

// quotaFlags are a tenant's quotas; 0 is none.
type quotaFlags struct {
	MaxConnections     int64    `name:"max-connections" help:"Connections open at once."`
	MaxTopics          int64    `name:"max-topics" help:"Topics."`
	MaxPartitions      int64    `name:"max-partitions" help:"Partitions, over all topics."`
	MaxStorage         byteSize `name:"max-storage" default:"0" help:"Bytes stored, over all partitions."`
	PublishBytesRate   byteSize `name:"publish-bytes-rate" default:"0" help:"Published bytes a second."`
	PublishMessageRate int64    `name:"publish-messages-rate" help:"Published messages a second."`
	DeliveryBytesRate  byteSize `name:"delivery-bytes-rate" default:"0" help:"Delivered bytes a second."`
}

func (q quotaFlags) quotas() auth.Quotas {
	return auth.Quotas{Connections: q.MaxConnections, Topics: q.MaxTopics, Partitions: q.MaxPartitions,
		StorageBytes: int64(q.MaxStorage), PublishBytesPerSec: int64(q.PublishBytesRate),
		PublishMsgsPerSec: q.PublishMessageRate, DeliveryBytesPerSec: int64(q.DeliveryBytesRate)}
}

type tenantAddCmd struct {
	Name string `arg:"" help:"Tenant name: a-z, 0-9, '_', '-'."`
	quotaFlags
	adminFlags
}

func (c *tenantAddCmd) Run(ctx context.Context) error {
	if err := c.call(ctx, "POST", "/api/v1/tenants", map[string]any{"name": c.Name, "quotas": c.quotas()}, nil); err != nil {
		return err
	}
	fmt.Printf("tenant %s created\n", c.Name)
	return nil
}

type tenantQuotaCmd struct {
	Name string `arg:""`
	quotaFlags
	adminFlags
}

func (c *tenantQuotaCmd) Run(ctx context.Context) error {
	if err := c.call(ctx, "PATCH", "/api/v1/tenants/"+url.PathEscape(c.Name), map[string]any{"quotas": c.quotas()}, nil); err != nil {
		return err
	}
	fmt.Printf("quotas of %s set\n", c.Name)
	return nil
}

type tenantListCmd struct{ adminFlags }

func (c *tenantListCmd) Run(ctx context.Context) error {
	var res struct {
		Tenants []auth.Tenant `json:"tenants"`
	}
	if err := c.call(ctx, "GET", "/api/v1/tenants", nil, &res); err != nil || c.JSON {
		return err
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	_, _ = fmt.Fprintln(w, "NAME\tCONNECTIONS\tTOPICS\tPARTITIONS\tSTORAGE\tPUBLISH B/S\tPUBLISH MSG/S\tDELIVERY B/S")
	for _, t := range res.Tenants {
		q := t.Quotas
		_, _ = fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.Name, quota(q.Connections), quota(q.Topics),
			quota(q.Partitions), quota(q.StorageBytes), quota(q.PublishBytesPerSec), quota(q.PublishMsgsPerSec),
			quota(q.DeliveryBytesPerSec))
	}
	return w.Flush()
}

func quota(v int64) string {
	if v == 0 {
		return "-"
	}
	return fmt.Sprint(v)
}

type tenantDeleteCmd struct {
	Name string `arg:""`
	adminFlags
}

func (c *tenantDeleteCmd) Run(ctx context.Context) error {
	if err := c.call(ctx, "DELETE", "/api/v1/tenants/"+url.PathEscape(c.Name), nil, nil); err != nil {
		return err
	}
	fmt.Printf("tenant %s deleted\n", c.Name)
	return nil
}
