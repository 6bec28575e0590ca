#include "img_options.h"

#include <stdio.h>
#include <string.h>

#include "util.h"

const struct conf_option img_options[] = {
    /* [network]: nimbus-api's, accepted so one file serves both. */
    { "network", "vni_min", CONF_INT, "1", 1, 16777215,
      "Lowest VXLAN network identifier handed out to tenant networks." },
    { "network", "vni_max", CONF_INT, "16777215", 1, 16777215,
      "Highest VXLAN network identifier handed out to tenant networks." },
    { "network", "underlay_mtu", CONF_INT, "1500", 576, 9216,
      "MTU of the underlay network; VXLAN networks get 50 bytes less "
      "(advertised to guests by DHCP)." },
    /* [image]: nimbus-image's own options.  The same rows belong in
     * nimbus-api's table (api-server/options.c). */
    { "image", "host", CONF_STR, "127.0.0.1", 0, 0,
      "Address nimbus-image (the Image API, Glance v2 compatible) binds to "
      "(IPv4 or IPv6 literal)." },
    { "image", "port", CONF_INT, "9292", 0, 65535,
      "Port of the Image API (0 picks a free port, for tests)." },
    { "image", "public_url", CONF_STR, "", 0, 0,
      "Base URL of the Image API in the links it hands out (version "
      "documents), for example http://ctl:9292.  Empty: from the request's "
      "Host header." },
    { "image", "store_dir", CONF_STR, "/var/lib/nimbus/images", 0, 0,
      "Directory of the filesystem image store: one file per image, "
      "uploads written under a temporary name and renamed when complete." },
    { "image", "max_image_size", CONF_INT, "1099511627776", 1, 9223372036854775807L,
      "Largest image in bytes; larger uploads get 413." },
    { "image", "project_quota_bytes", CONF_INT, "0", 0, 9223372036854775807L,
      "Total bytes of image data one project may store; 0 means no limit. "
      "Uploads beyond get 413." },
    { "image", "max_connections", CONF_INT, "10000", 1, 1000000,
      "Open client connections; more are refused." },
    { "image", "body_timeout", CONF_INT, "60", 1, 86400,
      "Seconds an upload may stall between two pieces of data." },
    /* [dashboard] */
    { "dashboard", "dir", CONF_STR, "", 0, 0,
      "Directory of the dashboard's static files (the repository's "
      "dashboard/), served by nimbus-api under /dashboard/ on the identity "
      "port.  Empty: no dashboard." },
    { "dashboard", "allowed_origins", CONF_STR, "", 0, 0,
      "Web origins (http://host:port, separated by commas or spaces) whose "
      "pages may call the APIs from a browser (CORS): the dashboard's origin, "
      "http://<host>:<identity_port>.  Read by nimbus-api and nimbus-image.  "
      "Empty: none." },
    /* [api]: nimbus-api's, accepted so that both daemons share one file. */
    { "api", "host", CONF_STR, "127.0.0.1", 0, 0,
      "Address the API listeners bind to (IPv4 or IPv6 literal)." },
    { "api", "public_host", CONF_STR, "", 0, 0,
      "Host name or address used in the URLs the API hands out." },
    { "api", "identity_port", CONF_INT, "5000", 1, 65535,
      "Port of the Identity (Keystone v3 compatible) API." },
    { "api", "compute_port", CONF_INT, "8774", 1, 65535,
      "Port of the Compute (Nova v2.1 compatible) API." },
    { "api", "network_port", CONF_INT, "9696", 1, 65535,
      "Port of the Network (Neutron v2.0 compatible) API." },
    { "api", "workers", CONF_INT, "1", 1, 64,
      "Number of API processes sharing the ports (SO_REUSEPORT)." },
    { "api", "max_connections", CONF_INT, "10000", 1, 1000000,
      "Open client connections per process and listener; more are refused." },
    { "api", "max_header_bytes", CONF_INT, "16384", 1024, 1048576,
      "Largest request line plus headers; larger requests get 431." },
    { "api", "max_body_bytes", CONF_INT, "1048576", 1024, 1073741824,
      "Largest JSON request body; larger requests get 413." },
    { "api", "header_timeout", CONF_INT, "10", 1, 3600,
      "Seconds a client has to send a complete request head." },
    { "api", "idle_timeout", CONF_INT, "60", 1, 86400,
      "Seconds an idle keep-alive connection is kept open." },
    /* [database] */
    { "database", "connection", CONF_STR,
      "host=/var/run/postgresql dbname=nimbus user=nimbus", 0, 0,
      "libpq connection string of the Nimbus database." },
    { "database", "pool_size", CONF_INT, "4", 1, 256,
      "Database connections per process for queries (one more is used for "
      "LISTEN/NOTIFY)." },
    { "database", "query_timeout", CONF_INT, "30", 1, 3600,
      "Seconds after which a database query is abandoned." },
    /* [identity] */
    { "identity", "key_dir", CONF_STR, "/etc/nimbus/keys", 0, 0,
      "Directory of the token signing keys; nimbus-image needs only the "
      "public keys (.pub files)." },
    { "identity", "token_expiration", CONF_INT, "3600", 60, 604800,
      "Lifetime of issued tokens in seconds." },
    { "identity", "region", CONF_STR, "RegionOne", 0, 0,
      "Region name used in the service catalog." },
    { "identity", "password_opslimit", CONF_INT, "2", 1, 64,
      "Argon2id passes for new password hashes." },
    { "identity", "password_memlimit_kib", CONF_INT, "65536", 8, 4194304,
      "Argon2id memory for new password hashes in KiB." },
    { "identity", "max_failed_logins_per_user", CONF_INT, "5", 1, 100000,
      "Failed logins allowed per user name within 'failed_login_window'." },
    { "identity", "max_failed_logins_per_address", CONF_INT, "20", 1, 1000000,
      "Failed logins allowed per client address within "
      "'failed_login_window'." },
    { "identity", "failed_login_window", CONF_INT, "60", 1, 86400,
      "Window in seconds for the failed-login limits." },
    /* [log] */
    { "log", "level", CONF_STR, "info", 0, 0,
      "Minimum level logged to stderr: debug, info, warn or error." },
};

const size_t img_options_count = ARRAY_SIZE(img_options);

struct conf *
img_config_load(const char *path)
{
    static const char *const foreign[] = { "scheduler", "compute", "network_agent", NULL };
    return conf_open(img_options, img_options_count, foreign, path, IMG_DEFAULT_CONFIG);
}
