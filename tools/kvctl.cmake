# kvctl: the command line client.
kv_program(kvctl SOURCES ${CMAKE_CURRENT_LIST_DIR}/kvctl.c ${CMAKE_CURRENT_LIST_DIR}/kvctl_txn.c
           ${CMAKE_CURRENT_LIST_DIR}/kvctl_json.c
           LIBS kv_client)
