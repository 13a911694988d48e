-- Dovecot LMTP push_notification_lua driver for chatmail.
-- On every new message delivered to a mailbox, set the private METADATA entry
-- "messagenew" on that mailbox. The chatmail-metadata dict service receives the set
-- (priv/<mailbox-guid>/messagenew) and queues one push notification per device token
-- of the recipient. The value is empty: only the event matters.

function dovecot_lua_notify_begin_txn(user)
    return { user = user }
end

function dovecot_lua_notify_event_message_new(ctx, event)
    local mbox = ctx.user:mailbox(event.mailbox)
    -- Setting an attribute needs an opened mailbox (Dovecot asserts box->opened).
    mbox:open()
    mbox:metadata_set("/private/messagenew", "")
    mbox:free()
end

function dovecot_lua_notify_end_txn(ctx, success)
end
