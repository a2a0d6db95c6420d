# Where the splitter serves the site: shell functions shared by the local image's boot
# script and the Nova image's autoscaler-splitter-site (tools/bake-images), sourced
# after image.conf and after defining log and die.
#
#   read_splitter_conf FILE   applies FILE, the user data's splitter.conf (written by the
#                             conductor from the template's splitter_port and site_path),
#                             to LISTEN_PORT and SITE_PATH; a missing FILE changes nothing
#   check_site                LISTEN_PORT is a TCP port, SITE_PATH and APP_PATH are paths
#   site_mount                prints the httpd.conf lines that serve SITE_PATH from the
#                             web VMs' application at APP_PATH
# shellcheck shell=bash

# splitter.conf comes from the user data, so it is parsed, not sourced: only known keys,
# values checked by check_site.
read_splitter_conf() {
    local file=$1 n=0 line
    [[ -f $file ]] || return 0
    while IFS= read -r line || [[ -n $line ]]; do
        n=$((n + 1))
        line=${line%$'\r'}
        [[ $line =~ ^[[:space:]]*(#.*)?$ ]] && continue
        if [[ $line =~ ^(LISTEN_PORT|SITE_PATH)=[\"\']?([^\"\']*)[\"\']?$ ]]; then
            printf -v "${BASH_REMATCH[1]}" '%s' "${BASH_REMATCH[2]}"
        elif [[ $line =~ ^([A-Za-z_][A-Za-z0-9_]*)= ]]; then
            log "warning: splitter.conf line $n: unknown key ${BASH_REMATCH[1]}, ignored"
        else
            die "splitter.conf line $n: expected LISTEN_PORT=<port> or SITE_PATH=<path>, got: $line"
        fi
    done <"$file"
}

# The template's rule for site_path (autoscaler-core's template::check_site_path): it
# starts and ends with "/", is at most 128 characters, its segments are letters, digits, ".", "_", "~" and "-"
# (never "." or ".."), and it is not the status worker's /jkmanager/.
valid_path() {
    local path=$1
    [[ $path == / ]] && return 0
    ((${#path} <= 128)) &&
        [[ $path =~ ^(/[A-Za-z0-9._~-]+)+/$ && ! $path =~ /\.\.?/ && $path != /jkmanager/* ]]
}

check_site() {
    if ! [[ $LISTEN_PORT =~ ^[0-9]{1,5}$ ]] || ((10#$LISTEN_PORT < 1 || 10#$LISTEN_PORT > 65535)); then
        die "LISTEN_PORT=$LISTEN_PORT: expected a TCP port (1-65535)"
    fi
    LISTEN_PORT=$((10#$LISTEN_PORT))
    valid_path "$SITE_PATH" ||
        die "SITE_PATH=$SITE_PATH: expected a URL path that starts and ends with / (letters, digits, ._~-)"
    valid_path "$APP_PATH" ||
        die "APP_PATH=$APP_PATH: expected a URL path that starts and ends with /"
}

# The lines for httpd.conf. When the site's path is the application's, one JkMount. Else
# mod_rewrite maps the site's path onto the application's and hands the result on ([PT])
# to mod_jk's mapping, which forwards the rewritten path (JkOptions ForwardURIProxy,
# mod_jk's default); the status worker keeps its own path.
site_mount() {
    if [[ $SITE_PATH == "$APP_PATH" ]]; then
        printf 'JkMount %s* loadbalancer\n' "$APP_PATH"
        return
    fi
    # "." is the one character of a valid path that a regular expression reads otherwise.
    local pattern=${SITE_PATH//./\\.}
    printf '# The site is at %s; the web VMs serve it at %s.\n' "$SITE_PATH" "$APP_PATH"
    printf 'LoadModule rewrite_module /usr/lib/apache2/modules/mod_rewrite.so\n'
    printf 'RewriteEngine On\n'
    if [[ $SITE_PATH == / ]]; then
        printf 'RewriteCond %%{REQUEST_URI} !^/jkmanager/\n'
    else
        # The path without its last "/" is the site too (as Tomcat does for a context).
        printf 'RewriteRule "^%s$" "%s" [R=301,L]\n' "${pattern%/}" "$SITE_PATH"
    fi
    # $1 is mod_rewrite's back-reference, not the shell's.
    # shellcheck disable=SC2016
    printf 'RewriteRule "^%s(.*)$" "%s$1" [PT]\n' "$pattern" "$APP_PATH"
    printf 'JkMount %s* loadbalancer\n' "$APP_PATH"
}
