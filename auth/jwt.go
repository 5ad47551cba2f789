package auth

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// JWTVerifier checks signed tokens of one external issuer: EdDSA (Ed25519)
// or RS256 signatures by the issuer's public key, an iss claim naming it,
// an exp claim in the future, a sub claim naming the user, and an optional
// tenant claim (and role claim: user or tenant-admin; admin only when
// AllowAdmin).
type JWTVerifier struct {
	Issuer     string
	Audience   string // when set, the aud claim must hold it
	AllowAdmin bool   // whether a token may carry role admin
	key        crypto.PublicKey
	method     string
}

// JWTLeeway is the clock skew allowed between the issuer and the broker:
// a token is taken until this long after its exp, and its connection is
// closed then.
const JWTLeeway = 30 * time.Second

// maxTokenBytes bounds a token before it is parsed.
const maxTokenBytes = 8 << 10

// NewJWTVerifier reads the issuer's public key from a PEM file (an Ed25519
// or RSA public key, or a certificate holding one).
func NewJWTVerifier(issuer, keyFile string) (*JWTVerifier, error) {
	if issuer == "" {
		return nil, fmt.Errorf("a JWT issuer key needs the issuer's name (the iss claim its tokens carry)")
	}
	data, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("JWT issuer key: %w", err)
	}
	key, err := parsePublicKey(data)
	if err != nil {
		return nil, fmt.Errorf("JWT issuer key %s: %w", keyFile, err)
	}
	return NewJWTVerifierKey(issuer, key)
}

// NewJWTVerifierKey makes a verifier for an issuer's key.
func NewJWTVerifierKey(issuer string, key crypto.PublicKey) (*JWTVerifier, error) {
	v := &JWTVerifier{Issuer: issuer, key: key}
	switch k := key.(type) {
	case ed25519.PublicKey:
		v.method = jwt.SigningMethodEdDSA.Alg()
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return nil, fmt.Errorf("an RSA issuer key has at least 2048 bits")
		}
		v.method = jwt.SigningMethodRS256.Alg()
	default:
		return nil, fmt.Errorf("the issuer key is %T; Ed25519 or RSA keys sign tokens", key)
	}
	return v, nil
}

func parsePublicKey(data []byte) (crypto.PublicKey, error) {
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, fmt.Errorf("no PEM block")
	}
	switch b.Type {
	case "CERTIFICATE":
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		return c.PublicKey, nil
	case "PUBLIC KEY":
		return x509.ParsePKIXPublicKey(b.Bytes)
	case "RSA PUBLIC KEY":
		return x509.ParsePKCS1PublicKey(b.Bytes)
	}
	return nil, fmt.Errorf("a %q PEM block is not a public key", b.Type)
}

// claims are the token's claims the broker reads.
type claims struct {
	jwt.RegisteredClaims
	Tenant string `json:"tenant,omitempty"`
	Role   string `json:"role,omitempty"`
}

// Verify checks a token and returns its principal.
func (v *JWTVerifier) Verify(tok string) (*Principal, error) {
	if len(tok) > maxTokenBytes {
		return nil, fmt.Errorf("authentication failed: the token is longer than %d bytes", maxTokenBytes)
	}
	opts := []jwt.ParserOption{jwt.WithValidMethods([]string{v.method}), jwt.WithIssuer(v.Issuer),
		jwt.WithExpirationRequired(), jwt.WithLeeway(JWTLeeway)}
	if v.Audience != "" {
		opts = append(opts, jwt.WithAudience(v.Audience))
	}
	var c claims
	_, err := jwt.ParseWithClaims(tok, &c, func(*jwt.Token) (any, error) { return v.key, nil }, opts...)
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return nil, fmt.Errorf("authentication failed: the token has expired")
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return nil, fmt.Errorf("authentication failed: the token is not from the trusted issuer")
	case err != nil:
		return nil, fmt.Errorf("authentication failed: the token is not valid")
	}
	if err := ValidateUserName(c.Subject); err != nil {
		return nil, fmt.Errorf("authentication failed: the token's subject: %w", err)
	}
	if c.Tenant != "" {
		if err := ValidateTenantName(c.Tenant); err != nil {
			return nil, fmt.Errorf("authentication failed: the token's tenant: %w", err)
		}
	}
	role, err := ParseRole(c.Role)
	if err != nil || (role == RoleAdmin && (!v.AllowAdmin || c.Tenant != "")) || (role == RoleTenantAdmin && c.Tenant == "") {
		return nil, fmt.Errorf("authentication failed: the token's role %q is not one it may carry", c.Role)
	}
	return &Principal{User: c.Subject, Tenant: c.Tenant, Role: role, Mechanism: MechToken, Expires: c.ExpiresAt.Time}, nil
}
