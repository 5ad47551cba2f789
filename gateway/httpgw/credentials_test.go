package httpgw

import (
	"crypto/tls"
	"crypto/x509"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestCredentials: a bearer token, HTTP Basic and a verified client
// certificate become the session's credentials; an unverified
// certificate counts for nothing.
func TestCredentials(t *testing.T) {
	r := httptest.NewRequest("GET", "/v1/topics", nil)
	r.RemoteAddr = "192.0.2.1:5000"
	r.Header.Set("Authorization", "Bearer tok")
	c := credentials(r)
	require.Equal(t, "tok", c.Token)
	require.Equal(t, "192.0.2.1:5000", c.Remote)

	r.Header.Del("Authorization")
	r.SetBasicAuth("alice", "pw")
	c = credentials(r)
	require.Equal(t, "alice", c.User)
	require.Equal(t, "pw", c.Password)
	require.Empty(t, c.Token)

	cert := &x509.Certificate{Raw: []byte("client")}
	r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert}}
	require.Nil(t, credentials(r).Cert, "presented but not verified")
	r.TLS.VerifiedChains = [][]*x509.Certificate{{cert}}
	require.Same(t, cert, credentials(r).Cert)
}
