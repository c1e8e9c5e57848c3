# shellcheck shell=bash
# Shared code for tuning/sysctl.sh and tuning/ethtool.sh. It is sourced, never run.
#
# Both scripts work the same way. They first build a plan: a list of actions, each one a file
# write under /proc or /sys or one ethtool command, computed from the host's current state and
# the recommendation. The modes then use that one plan:
#   --check     prints one line per finding and exits 0 when nothing differs, 1 otherwise;
#   --dry-run   prints the plan as the exact shell commands, and changes nothing;
#   --apply     saves the current value of everything the plan touches to a rollback file,
#               then runs the plan, printing each command as it runs it;
#   --rollback  restores the values saved in a rollback file.
# Because --apply runs exactly the plan that --dry-run prints, what a dry run shows is what an
# apply does. Because the plan only holds actions whose target differs from the
# recommendation, a second --apply finds nothing to do and changes nothing.
#
# Check output: each line starts with a tag, then the subject and the details:
#   ok      the host matches the recommendation;
#   differ  the host differs, and --apply would change it (a finding);
#   warn    the host differs in a way this script cannot change (a finding; the line says how);
#   skip    the setting does not exist here or the driver does not support it (not a finding);
#   info    a report, for example the NIC's offloads (not a finding).
# In --dry-run and --apply output, everything that is not a command is a "# " comment, so the
# dry-run output can be saved and run as a shell script.
#
# Exit codes: 0 success (for --check: nothing differs), 1 findings, 2 usage or environment
# error (not root, missing interface, missing tool, bad rollback file).
#
# SPATE_TUNING_ROOT, when set, is prefixed to every /proc and /sys path, so that the tests can
# run the scripts against a fake tree in a temporary directory. Plain files there do not
# behave like the kernel's "selector" files (THP and I/O scheduler, which read as
# "always [madvise] never" but take one word when written), so in a fake tree a write of one
# word to such a file rewrites the list with the brackets moved, as the kernel would show it.
#
# Rollback file format, one entry per line, fields separated by tabs, after a header line:
#   file     PATH  HEX          restore the file's exact bytes (hex-encoded);
#   select   PATH  WORD  HEX    write WORD (the kernel shows HEX's bytes afterwards);
#   ethtool  IFACE ARGS         run "ethtool ARGS" with IFACE in the place ethtool wants it.
# Rollback runs the ethtool entries first, newest first, so that queues removed by a channel
# change exist again, then restores each file whose bytes differ from the saved ones, and
# reads everything back. A second pass fixes values that the kernel couples (writing
# vm.dirty_ratio clears vm.dirty_bytes, for example).

ROLLBACK_HEADER='# spate-tuning rollback v1'

# "/" and "" both mean the real root; any other value is a fake tree.
ROOT="${SPATE_TUNING_ROOT:-}"
ROOT="${ROOT%/}"

# The ethtool binary; tests replace it with a fake one. Rollback needs it in both scripts.
ETHTOOL="${SPATE_ETHTOOL:-ethtool}"

MODE=''
ROLLBACK_INPUT=''
STATE_DIR="${SPATE_TUNING_STATE_DIR:-}"
FINDINGS=0

# The plan, as parallel arrays indexed by action.
PLAN_KIND=()   # write | select | ethtool
PLAN_TARGET=() # the path for write and select; the interface for ethtool
PLAN_VALUE=()  # the value for write and select; the ethtool arguments (space separated)
PLAN_UNDO=()   # for ethtool: the arguments that restore the current state
# Extra paths to save before applying, beyond the plan's own targets (see ethtool.sh).
SNAPSHOT_PATHS=()

die() {
    printf '%s: error: %s\n' "$PROG" "$*" >&2
    exit 2
}

# report TAG MESSAGE: one line of check output, or a comment line in the other modes.
report() {
    local tag=$1
    shift
    case $tag in
        differ | warn) FINDINGS=$((FINDINGS + 1)) ;;
    esac
    if [[ $MODE == check ]]; then
        printf '%-6s %s\n' "$tag" "$*"
    elif [[ $tag != ok && $tag != differ ]]; then
        printf '# %s: %s\n' "$tag" "$*"
    fi
}

is_fake_root() {
    [[ -n $ROOT ]]
}

# Prints the value of a /proc or /sys file without its trailing newline; fails if unreadable.
read_value() {
    local value
    value=$(cat -- "$1" 2> /dev/null) || return 1
    printf '%s' "$value"
}

# The selected word of a selector file ("always [madvise] never" -> "madvise"), or the whole
# value when nothing is bracketed.
selected_word() {
    local value=$1
    if [[ $value =~ \[([^]]+)\] ]]; then
        printf '%s' "${BASH_REMATCH[1]}"
    else
        printf '%s' "$value"
    fi
}

# Quotes a word for a shell command line only when it needs it.
shell_quote() {
    if [[ $1 =~ ^[A-Za-z0-9_./,:+=@%-]+$ ]]; then
        printf '%s' "$1"
    else
        printf "'%s'" "${1//\'/\'\\\'\'}"
    fi
}

hex_of_file() {
    od -An -v -tx1 -- "$1" | tr -d ' \n'
}

# Writes the bytes that a hex string encodes to a file, in one write.
write_hex() {
    local path=$1 hex=$2 escaped
    escaped=$(printf '%s' "$hex" | sed 's/../\\x&/g')
    # shellcheck disable=SC2059 # The format is built from validated hex digits only.
    printf "$escaped" > "$path"
}

plan_write() {
    PLAN_KIND+=(write)
    PLAN_TARGET+=("$1")
    PLAN_VALUE+=("$2")
    PLAN_UNDO+=('')
}

# A write that only raises: at apply time it writes VALUE only if the file then holds less.
# Used where an earlier action in the same plan may reset the file (an I/O scheduler change
# resets nr_requests), so that the plan stays right whatever the reset leaves behind.
plan_raise() {
    PLAN_KIND+=(raise)
    PLAN_TARGET+=("$1")
    PLAN_VALUE+=("$2")
    PLAN_UNDO+=('')
}

plan_select() {
    PLAN_KIND+=(select)
    PLAN_TARGET+=("$1")
    PLAN_VALUE+=("$2")
    PLAN_UNDO+=('')
}

# plan_ethtool IFACE "ARGS" "UNDO-ARGS"; ARGS start with the ethtool option (-L, -G, -C, -X),
# and the interface goes right after it.
plan_ethtool() {
    PLAN_KIND+=(ethtool)
    PLAN_TARGET+=("$1")
    PLAN_VALUE+=("$2")
    PLAN_UNDO+=("$3")
}

snapshot_path() {
    SNAPSHOT_PATHS+=("$1")
}

# ethtool_argv IFACE "ARGS": prints the full command, one word per line, for mapfile.
ethtool_argv() {
    local iface=$1 option rest
    option=${2%% *}
    rest=${2#"$option"}
    printf '%s\n' "$ETHTOOL" "$option" "$iface"
    local word
    for word in $rest; do
        printf '%s\n' "$word"
    done
}

plan_command() {
    local i=$1
    case ${PLAN_KIND[i]} in
        write | select)
            printf 'echo %s > %s' "$(shell_quote "${PLAN_VALUE[i]}")" \
                "$(shell_quote "${PLAN_TARGET[i]}")"
            ;;
        raise)
            local path value
            path=$(shell_quote "${PLAN_TARGET[i]}")
            value=$(shell_quote "${PLAN_VALUE[i]}")
            # shellcheck disable=SC2016 # The $(cat) is printed for the user's shell to run.
            printf '[ "$(cat %s)" -ge %s ] || echo %s > %s' "$path" "$value" "$value" "$path"
            ;;
        ethtool)
            local words
            mapfile -t words < <(ethtool_argv "${PLAN_TARGET[i]}" "${PLAN_VALUE[i]}")
            words[0]=ethtool
            printf '%s' "${words[*]}"
            ;;
    esac
}

# Writes one value the way `echo VALUE > PATH` does, returning the kernel's error text on
# failure (EINVAL for a value the driver refuses, EIO for a kernel-managed IRQ).
write_value() {
    local path=$1 value=$2 err
    if err=$( { printf '%s\n' "$value" > "$path"; } 2>&1); then
        return 0
    fi
    printf '%s' "${err##*: }"
    return 1
}

write_raise() {
    local path=$1 value=$2 current
    current=$(read_value "$path") || current=''
    if [[ $current =~ ^[0-9]+$ ]] && [[ $current -ge $value ]]; then
        return 0
    fi
    write_value "$path" "$value"
}

# In a fake tree, emulates the kernel's selector files (see the top of this file).
write_select() {
    local path=$1 word=$2 current list='' item
    if is_fake_root && current=$(read_value "$path") && [[ $current == *'['* ]]; then
        for item in $current; do
            item=${item#[}
            item=${item%]}
            if [[ $item == "$word" ]]; then
                item="[$item]"
            fi
            list+="${list:+ }$item"
        done
        write_value "$path" "$list"
    else
        write_value "$path" "$word"
    fi
}

require_root() {
    if is_fake_root; then
        return 0
    fi
    if [[ $EUID -ne 0 ]]; then
        die "--$MODE changes the kernel's settings and must run as root (try: sudo $0 ...)"
    fi
}

default_state_dir() {
    if [[ -z $STATE_DIR ]]; then
        STATE_DIR="$ROOT/var/lib/spate/tuning"
    fi
}

# Saves the current state of everything the plan touches; prints the rollback file's path.
save_rollback() {
    default_state_dir
    if ! { mkdir -p -- "$STATE_DIR" && chmod 0700 -- "$STATE_DIR"; }; then
        die "cannot create the state directory $STATE_DIR"
    fi
    local file stamp i path
    stamp=$(date +%Y%m%d-%H%M%S)
    file="$STATE_DIR/${PROG%.sh}-$stamp-$$.rollback"
    local -A saved=()
    {
        printf '%s\n' "$ROLLBACK_HEADER"
        printf '# written by %s --apply on %s; undo with: %s --rollback %s\n' \
            "$PROG" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$PROG" "$file"
        for i in "${!PLAN_KIND[@]}"; do
            if [[ ${PLAN_KIND[i]} == ethtool ]]; then
                printf 'ethtool\t%s\t%s\n' "${PLAN_TARGET[i]}" "${PLAN_UNDO[i]}"
            fi
        done
        for i in "${!PLAN_KIND[@]}"; do
            path=${PLAN_TARGET[i]}
            if [[ ${PLAN_KIND[i]} == ethtool || -n ${saved[$path]:-} || ! -e $path ]]; then
                continue
            fi
            saved[$path]=1
            if [[ ${PLAN_KIND[i]} == select ]]; then
                printf 'select\t%s\t%s\t%s\n' "$path" \
                    "$(selected_word "$(read_value "$path")")" "$(hex_of_file "$path")"
            else
                printf 'file\t%s\t%s\n' "$path" "$(hex_of_file "$path")"
            fi
        done
        for path in "${SNAPSHOT_PATHS[@]}"; do
            if [[ -n ${saved[$path]:-} || ! -e $path ]]; then
                continue
            fi
            saved[$path]=1
            printf 'file\t%s\t%s\n' "$path" "$(hex_of_file "$path")"
        done
    } > "$file.tmp" || die "cannot write the rollback file $file"
    mv -- "$file.tmp" "$file"
    ROLLBACK_FILE=$file
}

run_plan_dry() {
    local i
    if [[ ${#PLAN_KIND[@]} -eq 0 ]]; then
        printf '# nothing to change\n'
        return 0
    fi
    for i in "${!PLAN_KIND[@]}"; do
        plan_command "$i"
        printf '\n'
    done
}

run_plan_apply() {
    require_root
    if [[ ${#PLAN_KIND[@]} -eq 0 ]]; then
        printf '# nothing to change; no rollback file written\n'
        return 0
    fi
    save_rollback
    printf '# rollback file: %s\n' "$ROLLBACK_FILE"
    local i err rc failed=0 words
    for i in "${!PLAN_KIND[@]}"; do
        plan_command "$i"
        printf '\n'
        rc=0
        case ${PLAN_KIND[i]} in
            write) err=$(write_value "${PLAN_TARGET[i]}" "${PLAN_VALUE[i]}") || rc=$? ;;
            select) err=$(write_select "${PLAN_TARGET[i]}" "${PLAN_VALUE[i]}") || rc=$? ;;
            raise) err=$(write_raise "${PLAN_TARGET[i]}" "${PLAN_VALUE[i]}") || rc=$? ;;
            ethtool)
                mapfile -t words < <(ethtool_argv "${PLAN_TARGET[i]}" "${PLAN_VALUE[i]}")
                err=$("${words[@]}" 2>&1 > /dev/null) || rc=$?
                ;;
        esac
        if [[ $rc -ne 0 ]]; then
            failed=$((failed + 1))
            printf '# skip: the command above failed (%s); the driver or kernel refused it\n' \
                "${err//$'\n'/ }"
        fi
    done
    printf 'rollback file: %s\n' "$ROLLBACK_FILE"
    if [[ $failed -ne 0 ]]; then
        printf '# %d command(s) failed and were skipped; run --check to see what remains\n' \
            "$failed"
    fi
    return 0
}

# True when PATH is a /proc or /sys path under ROOT, with no "..": a rollback file may only
# restore such paths.
rollback_path_allowed() {
    local path=$1
    [[ $path == "$ROOT/proc/"* || $path == "$ROOT/sys/"* ]] || return 1
    [[ $path != *'/../'* && $path != *'/..' ]]
}

refuse_path() {
    die "refusing to restore '$1': it is not under $ROOT/proc or $ROOT/sys"
}

run_rollback() {
    local file=$ROLLBACK_INPUT
    [[ -r $file ]] || die "cannot read the rollback file '$file'"
    local header
    IFS= read -r header < "$file" || header=''
    [[ $header == "$ROLLBACK_HEADER" ]] ||
        die "'$file' is not a spate tuning rollback file (its first line is not '$ROLLBACK_HEADER')"
    require_root
    local kinds=() paths=() words=() hexes=() line kind a b c n=0
    while IFS= read -r line; do
        [[ -z $line || $line == '#'* ]] && continue
        IFS=$'\t' read -r kind a b c <<< "$line"
        case $kind in
            file)
                rollback_path_allowed "$a" || refuse_path "$a"
                [[ $b =~ ^([0-9a-f]{2})*$ ]] || die "bad hex bytes for '$a' in '$file'"
                kinds+=(file) paths+=("$a") words+=('') hexes+=("$b")
                ;;
            select)
                rollback_path_allowed "$a" || refuse_path "$a"
                [[ $b =~ ^[A-Za-z0-9_+-]+$ ]] || die "bad selector word for '$a' in '$file'"
                [[ $c =~ ^([0-9a-f]{2})*$ ]] || die "bad hex bytes for '$a' in '$file'"
                kinds+=(select) paths+=("$a") words+=("$b") hexes+=("$c")
                ;;
            ethtool)
                [[ $a =~ ^[A-Za-z0-9_.:@-]+$ ]] || die "bad interface name '$a' in '$file'"
                [[ $b =~ ^-[LGCX]( [A-Za-z0-9_.-]+)+$ ]] ||
                    die "bad ethtool arguments '$b' in '$file'"
                kinds+=(ethtool) paths+=("$a") words+=("$b") hexes+=('')
                ;;
            *) die "unknown entry '$kind' in '$file'" ;;
        esac
        n=$((n + 1))
    done < "$file"
    local i err argv restored=0 unchanged=0 failed=0
    for ((i = n - 1; i >= 0; i--)); do
        [[ ${kinds[i]} == ethtool ]] || continue
        if [[ ! -e "$ROOT/sys/class/net/${paths[i]}" ]]; then
            printf '# skip: interface %s no longer exists; not restoring: ethtool %s\n' \
                "${paths[i]}" "${words[i]}"
            failed=$((failed + 1))
            continue
        fi
        mapfile -t argv < <(ethtool_argv "${paths[i]}" "${words[i]}")
        printf 'ethtool %s\n' "${argv[*]:1}"
        if err=$("${argv[@]}" 2>&1 > /dev/null); then
            restored=$((restored + 1))
        else
            printf '# skip: the command above failed (%s)\n' "${err//$'\n'/ }"
            failed=$((failed + 1))
        fi
    done
    # Two passes: the second one fixes values that a later write in the first one changed.
    local pass
    for pass in 1 2; do
        for ((i = 0; i < n; i++)); do
            [[ ${kinds[i]} == ethtool ]] && continue
            if [[ ! -e ${paths[i]} ]]; then
                [[ $pass -eq 1 ]] && printf '# skip: %s no longer exists\n' "${paths[i]}"
                continue
            fi
            if [[ $(hex_of_file "${paths[i]}") == "${hexes[i]}" ]]; then
                [[ $pass -eq 1 ]] && unchanged=$((unchanged + 1))
                continue
            fi
            if [[ ${kinds[i]} == select ]] && ! is_fake_root; then
                printf 'echo %s > %s\n' "${words[i]}" "$(shell_quote "${paths[i]}")"
                err=$(write_value "${paths[i]}" "${words[i]}") || true
            else
                printf '# restore %s (%d bytes)\n' "${paths[i]}" $((${#hexes[i]} / 2))
                err=$( { write_hex "${paths[i]}" "${hexes[i]}"; } 2>&1) || true
            fi
            [[ $pass -eq 1 ]] && restored=$((restored + 1))
        done
    done
    for ((i = 0; i < n; i++)); do
        [[ ${kinds[i]} == ethtool || ! -e ${paths[i]} ]] && continue
        if [[ $(hex_of_file "${paths[i]}") != "${hexes[i]}" ]]; then
            printf '# warn: %s still differs from the saved value\n' "${paths[i]}"
            failed=$((failed + 1))
        fi
    done
    printf '# rollback: %d restored, %d already had their saved value, %d failed\n' \
        "$restored" "$unchanged" "$failed"
    [[ $failed -eq 0 ]] || return 1
}

# Parses one of the options that both scripts share. Returns 0 and sets SHIFT_BY to the number
# of arguments it consumed, or returns 1 when the option is not a shared one.
# shellcheck disable=SC2034 # The sourcing script reads SHIFT_BY.
parse_common_option() {
    SHIFT_BY=1
    case $1 in
        --check) set_mode check ;;
        --dry-run) set_mode dry-run ;;
        --apply) set_mode apply ;;
        --rollback)
            set_mode rollback
            [[ $# -ge 2 ]] || die '--rollback needs the rollback file as its argument'
            ROLLBACK_INPUT=$2
            SHIFT_BY=2
            ;;
        --state-dir)
            [[ $# -ge 2 ]] || die '--state-dir needs a directory'
            STATE_DIR=$2
            SHIFT_BY=2
            ;;
        *) return 1 ;;
    esac
}

set_mode() {
    [[ -z $MODE ]] || die "choose one mode: --check, --dry-run, --apply or --rollback FILE"
    MODE=$1
}

# Runs the chosen mode once the script has built its plan.
finish() {
    case $MODE in
        check)
            if [[ $FINDINGS -eq 0 ]]; then
                return 0
            fi
            printf '# %d finding(s); --dry-run shows the commands that --apply would run\n' \
                "$FINDINGS"
            return 1
            ;;
        dry-run) run_plan_dry ;;
        apply) run_plan_apply ;;
    esac
}
