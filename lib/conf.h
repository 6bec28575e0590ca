/* Configuration: one INI-style file ("[section]" headers, "key = value"
 * lines, '#' or ';' comments).  Every option is declared once in a table
 * (struct conf_option) with its type, default and help text; the table
 * drives parsing, validation and the example file (nimbus-manage
 * config-example), so the documentation cannot drift from the code.
 * Unknown sections or keys and values of the wrong type are errors that name
 * the file, line and option. */
#ifndef NIMBUS_CONF_H
#define NIMBUS_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

enum conf_type { CONF_STR, CONF_INT, CONF_BOOL };

struct conf_option {
    const char *section;
    const char *name;
    enum conf_type type;
    const char *def;       /* Default as text; NULL for "no default (empty)". */
    long min, max;         /* For CONF_INT. */
    const char *help;      /* One or more sentences. */
};

struct conf;

/* Builds a configuration from 'opts' ('n' entries, must outlive the conf)
 * with every option at its default.  The caller owns the result. */
struct conf *conf_new(const struct conf_option *opts, size_t n);
void conf_free(struct conf *c);

/* Declares sections that belong to other daemons sharing the file: their
 * lines are skipped unread (their owner validates them).  'sections' is a
 * NULL-terminated array that must outlive the conf. */
void conf_set_foreign(struct conf *c, const char *const *sections);

/* Reads 'path' over the defaults.  On error returns a negative errno and
 * writes a message naming the file, line and option into 'err'. */
int conf_load(struct conf *c, const char *path, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/* Sets one option from text, validating it (used by the file parser and by
 * tests).  Same error convention. */
int conf_set(struct conf *c, const char *section, const char *name,
             const char *value, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Getters abort on an undeclared option: that is a programming error. */
const char *conf_str(const struct conf *c, const char *section, const char *name);
long conf_int(const struct conf *c, const char *section, const char *name);
bool conf_bool(const struct conf *c, const char *section, const char *name);

/* A daemon's configuration: conf_new('opts', 'n') with the sections
 * 'foreign' (may be NULL) left to other daemons, read from 'path', or from
 * 'default_path' when 'path' is NULL (a missing default file leaves the
 * defaults), with [log] level checked.  Returns it (the caller frees it
 * with conf_free), or NULL after printing the error on stderr. */
struct conf *conf_open(const struct conf_option *opts, size_t n,
                       const char *const *foreign, const char *path,
                       const char *default_path);

/* The command line of a daemon that takes "[--config FILE] [--help]":
 * sets '*config' (NULL when not given) and returns -1 to go on, or the
 * exit status after 'usage' has printed: 0 for --help (on stdout), 2 for
 * anything else (on stderr). */
int conf_parse_args(int argc, char **argv, void (*usage)(FILE *out), const char **config);

/* log_init() of 'progname' at the [log] level of 'c' (info when it is not
 * a level: conf_open() refused that already). */
void conf_log_init(const struct conf *c, const char *progname);

/* Writes the example file: every option commented out at its default, with
 * its help text. */
void conf_write_example(const struct conf_option *opts, size_t n, FILE *out);

#endif
