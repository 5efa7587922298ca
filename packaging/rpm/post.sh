# dynip's %post ($1: 1 on install, 2 on upgrade): the system user, the state directory,
# a config with a fresh key when there is none (never changed afterwards: an upgrade
# keeps it), and the units' presets on first install, as Fedora's %systemd_post does.
config=/etc/dynip/dynip.conf
state=/var/lib/dynip

if command -v systemd-sysusers >/dev/null 2>&1; then
    systemd-sysusers dynip.conf || exit 1
elif ! getent passwd dynip >/dev/null; then
    getent group dynip >/dev/null || groupadd --system dynip || exit 1
    useradd --system --gid dynip --home-dir "$state" --no-create-home \
        --shell /usr/sbin/nologin --comment "dynip server" dynip || exit 1
fi

if [ ! -d "$state" ]; then
    install -d -o dynip -g dynip -m 0750 "$state" || exit 1
fi

if [ ! -e "$config" ]; then
    if [ ! -d /etc/dynip ]; then
        install -d -o root -g dynip -m 0750 /etc/dynip || exit 1
    fi
    new=/etc/dynip/.dynip.conf.rpmnew
    rm -f "$new"
    /usr/bin/dynip init "$new" --state-dir "$state" &&
        chown root:dynip "$new" &&
        chmod 0640 "$new" &&
        mv "$new" "$config" || exit 1
fi

# Presets decide (Fedora's default preset leaves both disabled): enable the server with
# `systemctl enable --now dynip.service`, the client's timer once server_hostname is set.
if [ "$1" -eq 1 ] && command -v systemctl >/dev/null 2>&1; then
    systemctl --no-reload preset dynip.service dynip-client.timer >/dev/null 2>&1 || :
fi
exit 0
