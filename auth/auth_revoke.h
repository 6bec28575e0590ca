/* The in-memory token revocation list, with Keystone's revocation-event
 * semantics.  The API server fills it from the revocation rows in
 * PostgreSQL at start-up and adds to it on each NOTIFY, then checks every
 * validated token against it (after auth_token_decode(), on every request,
 * cache hit or not).
 *
 * A token is revoked when
 *   - an AUTH_REVOKE_AUDIT_ID entry matches its audit id or its parent audit
 *     id (so revoking a token also revokes the tokens re-scoped from it); or
 *   - an AUTH_REVOKE_USER entry matches its user id, or an
 *     AUTH_REVOKE_PROJECT entry matches its project id, and the token was
 *     issued at or before the entry's revoked_at.
 * Times are unix seconds, so a token issued in the same second as a
 * user or project revocation is revoked too; that errs on the safe side.
 *
 * An entry can be dropped once every token it could match has expired:
 * auth_revoke_prune(list, now - longest token lifetime).
 *
 * Not thread-safe: one list per event loop, or a lock around it. */
#ifndef NIMBUS_AUTH_REVOKE_H
#define NIMBUS_AUTH_REVOKE_H

#include <stddef.h>
#include <stdint.h>

struct auth_token;

enum auth_revoke_kind {
    AUTH_REVOKE_AUDIT_ID,
    AUTH_REVOKE_USER,
    AUTH_REVOKE_PROJECT,
};

/* Opaque. */
struct auth_revoke;

/* Creates an empty list that holds at most 'max_entries' entries (0 means
 * 1,000,000).  The caller owns '*out' and frees it with auth_revoke_free().
 * Returns 0 or -ENOMEM. */
int auth_revoke_new(size_t max_entries, struct auth_revoke **out)
    __attribute__((warn_unused_result));

/* Frees the list.  Accepts NULL. */
void auth_revoke_free(struct auth_revoke *rl);

/* Adds an entry (the list copies 'id').  Adding an existing kind and id
 * keeps the later revoked_at.  Returns 0, -EINVAL for an empty id or one
 * longer than AUTH_ID_MAX (AUTH_AUDIT_ID_LEN for audit ids), -ENOSPC when
 * the list is full, or -ENOMEM. */
int auth_revoke_add(struct auth_revoke *rl, enum auth_revoke_kind kind,
                    const char *id, int64_t revoked_at)
    __attribute__((warn_unused_result));

/* Returns 0 when 'tok' is not revoked, -EKEYREVOKED when it is. */
int auth_revoke_check(const struct auth_revoke *rl,
                      const struct auth_token *tok)
    __attribute__((warn_unused_result));

/* Removes the entries with revoked_at < 'before' and returns how many. */
size_t auth_revoke_prune(struct auth_revoke *rl, int64_t before);

/* Removes every entry (before reloading the list from the database). */
void auth_revoke_clear(struct auth_revoke *rl);

/* Number of entries. */
size_t auth_revoke_count(const struct auth_revoke *rl);

#endif
