/* Key pairs (os-keypairs at 2.1): import a public key, or generate a pair
 * when none is given.  Generation runs ssh-keygen (Ed25519) on the libuv
 * thread pool: the private key is returned once and never stored. */
#include "compute.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "arena.h"
#include "compute_version.h"
#include "log.h"


/* Largest public key accepted, in bytes (an RSA-16384 key is ~2.8 KB). */
#define PUBKEY_MAX 16384

/* Key pairs belong to the caller: the policy target is the caller's own
 * user (admin_or_owner). */
static int
keypairs_begin(http_request *req, struct api_req *ar)
{
    if (compute_version_check(req) < 0 || api_authenticate(req, ar) < 0)
        return -EACCES;
    return api_authorize(req, ar, POL_KEYPAIRS, NULL, ar->token->user_id);
}

#define KEYPAIR_FIELDS \
    "'fingerprint', k.fingerprint, 'name', k.name, 'public_key', k.public_key"

static void
keypairs_list(http_request *req, struct api_req *ar)
{
    if (keypairs_begin(req, ar) < 0)
        return;
    const char **p = compute_params(req, ar, 4);
    p[3] = ar->token->user_id;
    compute_run(req,
        "SELECT jsonb_build_object('keypairs', coalesce(jsonb_agg(jsonb_build_object("
        " 'keypair', jsonb_build_object(" KEYPAIR_FIELDS ")) ORDER BY k.name), '[]'))::text"
        " AS body FROM keypairs k WHERE k.user_id = $4", 4, p, NULL);
}

static const char *
keypair_missing(http_request *req, const char *name)
{
    return arena_printf(http_req_arena(req), "Keypair %s not found for user %s",
                        name ? name : "", api_req(req)->token->user_id);
}

static void
keypairs_show(http_request *req, struct api_req *ar)
{
    if (keypairs_begin(req, ar) < 0)
        return;
    const char **p = compute_params(req, ar, 5);
    p[3] = ar->token->user_id;
    p[4] = http_req_param(req, "name");
    compute_run(req,
        "SELECT jsonb_build_object('keypair', jsonb_build_object(" KEYPAIR_FIELDS ","
        " 'user_id', k.user_id, 'created_at', compute_ts_usec(k.created_at), 'deleted', false,"
        " 'deleted_at', NULL, 'updated_at', NULL, 'id', k.id))::text AS body"
        " FROM keypairs k WHERE k.user_id = $4 AND k.name = $5", 5, p,
        keypair_missing(req, p[4]));
}

static void
keypairs_delete(http_request *req, struct api_req *ar)
{
    if (keypairs_begin(req, ar) < 0)
        return;
    const char **p = compute_params(req, ar, 5);
    p[3] = ar->token->user_id;
    p[4] = http_req_param(req, "name");
    compute_run(req, "DELETE FROM keypairs WHERE user_id = $4 AND name = $5"
                     " RETURNING 202 AS code", 5, p, keypair_missing(req, p[4]));
}

/* True for "<type> <base64> [comment]" with a known type. */
static bool
pubkey_valid(const char *k)
{
    static const char *const types[] = {
        "ssh-rsa ", "ssh-ed25519 ", "ssh-dss ", "ecdsa-sha2-nistp256 ",
        "ecdsa-sha2-nistp384 ", "ecdsa-sha2-nistp521 ",
    };
    const char *b = NULL;
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (!strncmp(k, types[i], strlen(types[i])))
            b = k + strlen(types[i]);
    if (!b)
        return false;
    size_t n = 0;
    while (b[n] && (isalnum((unsigned char)b[n]) || b[n] == '+' || b[n] == '/'))
        n++;
    size_t pad = 0;
    while (b[n + pad] == '=')
        pad++;
    if (n < 16 || pad > 2 || (n + pad) % 4 != 0)
        return false;
    const char *rest = b + n + pad;
    return !*rest || *rest == ' ' || *rest == '\n' || *rest == '\r';
}

/* Inserts the pair; p[3] user, p[4] name, p[5] public key, p[6] private
 * key (NULL when imported).  The fingerprint is the MD5 of the key blob, as
 * Nova's. */
static void
keypair_insert(http_request *req, const char **p)
{
    compute_run(req,
        "WITH n AS (SELECT count(*) AS c FROM keypairs WHERE user_id = $4),"
        " dup AS (SELECT 1 FROM keypairs WHERE user_id = $4 AND name = $5),"
        " ins AS (INSERT INTO keypairs (name, user_id, public_key, fingerprint)"
        "  SELECT $5, $4, $6, regexp_replace(md5(decode(split_part($6, ' ', 2), 'base64')),"
        "   '(..)(?!$)', '\\1:', 'g')"
        "  WHERE NOT EXISTS (SELECT 1 FROM dup) AND (compute_quota_limit($2, 'key_pairs') < 0"
        "   OR (SELECT c FROM n) < compute_quota_limit($2, 'key_pairs')) RETURNING *)"
        "SELECT CASE WHEN EXISTS (SELECT 1 FROM dup) THEN 409"
        "  WHEN NOT EXISTS (SELECT 1 FROM ins) THEN 403 ELSE 200 END AS code,"
        " CASE WHEN EXISTS (SELECT 1 FROM dup) THEN 'Key pair ''' || $5 || ''' already exists.'"
        "  ELSE 'Quota exceeded, too many key pairs.' END AS message,"
        " (SELECT jsonb_build_object('keypair', jsonb_build_object(" KEYPAIR_FIELDS ","
        "  'user_id', k.user_id) || CASE WHEN $7::text IS NULL THEN '{}'::jsonb"
        "  ELSE jsonb_build_object('private_key', $7) END) FROM ins k)::text AS body",
        7, p, NULL);
}

struct keygen_job {
    uv_work_t work;
    http_request *req;
    const char **p;
    char *pub, *priv;       /* malloc'd by the worker. */
    int status;
};

static char *
slurp(const char *path, size_t max)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    char *buf = malloc(max + 1);
    size_t n = buf ? fread(buf, 1, max, f) : 0;
    fclose(f);
    if (!buf)
        return NULL;
    buf[n] = '\0';
    return buf;
}

static void
keygen_work(uv_work_t *w)
{
    struct keygen_job *j = w->data;
    char dir[] = "/tmp/nimbus-keygen-XXXXXX";
    char path[64], pubpath[80];
    j->status = -EIO;
    if (!mkdtemp(dir))
        return;
    snprintf(path, sizeof path, "%s/key", dir);
    snprintf(pubpath, sizeof pubpath, "%s/key.pub", dir);
    char *argv[] = { (char *)"ssh-keygen", (char *)"-q", (char *)"-t", (char *)"ed25519",
                     (char *)"-N", (char *)"", (char *)"-C", (char *)"Generated-by-Nimbus",
                     (char *)"-f", path, NULL };
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    pid_t pid;
    int st = 0;
    if (posix_spawnp(&pid, "ssh-keygen", &fa, NULL, argv, environ) == 0
        && waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0) {
        j->pub = slurp(pubpath, PUBKEY_MAX);
        j->priv = slurp(path, PUBKEY_MAX);
        if (j->pub && j->priv) {
            j->pub[strcspn(j->pub, "\r\n")] = '\0';
            j->status = 0;
        }
    }
    posix_spawn_file_actions_destroy(&fa);
    unlink(path);
    unlink(pubpath);
    rmdir(dir);
}

static void
keygen_done(uv_work_t *w, int status)
{
    struct keygen_job *j = w->data;
    http_request *req = j->req;
    if (status < 0 || j->status < 0) {
        log_error("compute", "key pair generation with ssh-keygen failed");
        api_error(req, 500, "Key pair generation failed.");
    } else {
        j->p[5] = arena_strdup(http_req_arena(req), j->pub);
        j->p[6] = arena_strdup(http_req_arena(req), j->priv);
        keypair_insert(req, j->p);
    }
    free(j->pub);
    free(j->priv);
    free(j);
}

static void
keypairs_create(http_request *req, struct api_req *ar)
{
    if (keypairs_begin(req, ar) < 0)
        return;
    json_t *body = api_parse_body(req);
    if (!body)
        return;
    const char **p = compute_params(req, ar, 7);
    p[3] = ar->token->user_id;
    json_t *kp = json_object_get(body, "keypair");
    json_t *name = json_object_get(kp, "name");
    json_t *pub = json_object_get(kp, "public_key");
    if (!json_is_object(kp)) {
        api_error(req, 400, "Invalid input for field/attribute keypair.");
        goto out;
    }
    const char *n = json_string_value(name);
    if (!n || !*n || strlen(n) > COMPUTE_NAME_MAX
        || strspn(n, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                     "_- .@") != strlen(n)) {
        api_error(req, 400, "Keypair data is invalid: Keypair name contains unsafe "
                  "characters");
        goto out;
    }
    p[4] = compute_dup(req, n);
    if (pub && !json_is_null(pub)) {
        const char *k = json_string_value(pub);
        if (!k || strlen(k) > PUBKEY_MAX || !pubkey_valid(k)) {
            api_error(req, 400, "Keypair data is invalid: failed to generate fingerprint");
            goto out;
        }
        p[5] = compute_dup(req, k);
        keypair_insert(req, p);
        goto out;
    }
    struct keygen_job *j = calloc(1, sizeof *j);
    if (!j)
        abort();
    j->req = req;
    j->p = p;
    j->work.data = j;
    if (uv_queue_work(ar->api->loop, &j->work, keygen_work, keygen_done) < 0) {
        free(j);
        api_error(req, 500, "Key pair generation failed.");
    }
out:
    json_decref(body);
}

void
compute_keypairs_register(struct api *a)
{
    api_route(a, API_COMPUTE, "GET", "/v2.1/os-keypairs", keypairs_list);
    api_route(a, API_COMPUTE, "POST", "/v2.1/os-keypairs", keypairs_create);
    api_route(a, API_COMPUTE, "GET", "/v2.1/os-keypairs/{name}", keypairs_show);
    api_route(a, API_COMPUTE, "DELETE", "/v2.1/os-keypairs/{name}", keypairs_delete);
}
